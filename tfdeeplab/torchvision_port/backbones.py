"""torchvision's ImageNet classifiers as tfdeeplab backbones, with torchvision's weights:
`DeepLabV3(11, backbone="resnet50_tv", backbone_weights="resnet50-11ad3fa6.pth")`.

The trunks are the ones `from_torchvision` uses (`resnet_tv`, `mobilenet_v3_large_tv`); their
weights are the state dicts of torchvision's `resnet50`, `resnet101` and `mobilenet_v3_large`
classifiers, whose classifier keys (`fc.*`, `classifier.*`) are accepted and dropped.
"""

import dataclasses
from collections.abc import Callable

import keras

from tfdeeplab.torchvision_port.layers import TORCH_MOMENTUM, StateDictSlots
from tfdeeplab.torchvision_port.mobilenet_v3 import mobilenet_v3_large_tv
from tfdeeplab.torchvision_port.resnet import resnet_tv
from tfdeeplab.torchvision_port.state_dict import (
    load_state_dict,
    names_torchvision_weights,
    read_state_dict,
)


@dataclasses.dataclass(frozen=True)
class TorchvisionBackbone:
    """A torchvision classifier's trunk.

    Attributes:
        build: (output_stride, input_shape, slots) → the Keras trunk.
        output_strides: those it can run at.
        prefix: its layers' key prefix in the classifier's state dict.
        classifier: the state-dict prefix of the classifier, which the backbone drops.
        weights_enum: torchvision's weights enum, for weights named like "IMAGENET1K_V1".
    """

    build: Callable
    output_strides: tuple
    prefix: str
    classifier: str
    weights_enum: str


TORCHVISION_BACKBONES = {
    "resnet50_tv": TorchvisionBackbone(
        lambda stride, shape, slots: resnet_tv(50, stride, shape, slots),
        (8, 16, 32),
        "",
        "fc.",
        "ResNet50_Weights",
    ),
    "resnet101_tv": TorchvisionBackbone(
        lambda stride, shape, slots: resnet_tv(101, stride, shape, slots),
        (8, 16, 32),
        "",
        "fc.",
        "ResNet101_Weights",
    ),
    "mobilenet_v3_large_tv": TorchvisionBackbone(
        lambda stride, shape, slots: mobilenet_v3_large_tv(stride == 16, shape, slots),
        (16, 32),
        "features.",
        "classifier.",
        "MobileNet_V3_Large_Weights",
    ),
}


def _state(spec, weights):
    """The classifier's state dict: a file or mapping (`read_state_dict`), or a member of
    torchvision's weights enum ("imagenet" = its DEFAULT; needs torchvision and internet)."""
    if weights == "imagenet" or names_torchvision_weights(weights):
        try:
            import torchvision
        except ImportError:
            raise ImportError(
                f"weights={weights!r} downloads torchvision's weights, which needs torchvision "
                "installed; or pass a .pth / .safetensors / .npz state dict"
            ) from None
        member = "DEFAULT" if weights == "imagenet" else weights
        enum = getattr(torchvision.models, spec.weights_enum)
        return read_state_dict(enum[member].get_state_dict(progress=True))
    return read_state_dict(weights)


def torchvision_backbone(
    name, output_stride, weights=None, input_shape=(None, None, 3), momentum=None, mid=False
):
    """The `get_backbone` contract for a torchvision trunk (see `TORCHVISION_BACKBONES`).

    Returns:
        A functional `keras.Model` named `<name>_os<output_stride>` from float RGB in [0, 255]
        to {"low": stride 4, "high": stride `output_stride`} (with `mid`, also "mid": the
        auxiliary head's input), with `weights` loaded when given.
    """
    spec = TORCHVISION_BACKBONES[name]
    if output_stride not in spec.output_strides:
        allowed = ", ".join(map(str, spec.output_strides))
        raise ValueError(
            f"output_stride={output_stride!r} is not supported by backbone={name!r}; "
            f"choose one of: {allowed}"
        )
    momentum = TORCH_MOMENTUM if momentum is None else momentum
    slots = StateDictSlots(spec.prefix, strip=spec.prefix, momentum=momentum)
    trunk = spec.build(output_stride, input_shape, slots)
    if weights is not None:
        load_state_dict(slots.layers, _state(spec, weights), ignored_prefixes=(spec.classifier,))
    keys = ("low", "mid", "high") if mid else ("low", "high")
    outputs = {key: trunk.output[key] for key in keys}
    return keras.Model(trunk.input, outputs, name=f"{name}_os{output_stride}")
