"""torchvision's DeepLabV3 models in Keras, with their weights: `from_torchvision`.

torchvision/models/segmentation/deeplabv3.py builds, on the backbone's last features:
`DeepLabHead` = ASPP (rates 12, 24, 36; 256 channels; image pooling; projection + BN + ReLU +
dropout 0.5) → 3×3 convolution (no bias) → BN → ReLU → 1×1 classifier; then bilinear
upsampling to the input size with align_corners=False. With `aux_loss`, an `FCNHead` on the
auxiliary features (ResNet's layer3, MobileNetV3's C2) trains beside it. Every BatchNorm of the
head has epsilon 1e-5.
"""

import dataclasses
from collections.abc import Callable

import keras

from tfdeeplab.layers.aspp import ASPP
from tfdeeplab.layers.auxiliary_head import AuxiliaryHead
from tfdeeplab.layers.resize_like import ResizeLike
from tfdeeplab.segmentation_model import SegmentationModel
from tfdeeplab.torchvision_port.layers import TORCH_MOMENTUM, StateDictSlots
from tfdeeplab.torchvision_port.mobilenet_v3 import mobilenet_v3_large_tv
from tfdeeplab.torchvision_port.resnet import resnet_tv
from tfdeeplab.torchvision_port.state_dict import (
    StateDictError,
    load_state_dict,
    names_torchvision_weights,
    read_state_dict,
)

HEAD_EPSILON = 1e-5
HEAD_CHANNELS = 256
RATES = (12, 24, 36)
ASPP_DROPOUT = 0.5
AUX_DROPOUT = 0.1
CLASSIFIER_KEY = "classifier.4.weight"


@dataclasses.dataclass(frozen=True)
class TorchvisionArch:
    """One of torchvision's DeepLabV3 builders.

    Attributes:
        backbone: builds the Keras backbone from (input_shape, slots).
        weights_enum: the name of torchvision's weights enum for `weights="..."`.
    """

    backbone: Callable
    weights_enum: str


ARCHS = {
    "deeplabv3_resnet50": TorchvisionArch(
        lambda shape, slots: resnet_tv(50, 8, shape, slots), "DeepLabV3_ResNet50_Weights"
    ),
    "deeplabv3_resnet101": TorchvisionArch(
        lambda shape, slots: resnet_tv(101, 8, shape, slots), "DeepLabV3_ResNet101_Weights"
    ),
    "deeplabv3_mobilenet_v3_large": TorchvisionArch(
        lambda shape, slots: mobilenet_v3_large_tv(True, shape, slots),
        "DeepLabV3_MobileNet_V3_Large_Weights",
    ),
}


def _aspp_slots(aspp, rates):
    """torchvision's ASPP keys → the sublayers of tfdeeplab's `ASPP` (same branch order)."""
    slots = {}
    for index, (conv, bn, _) in enumerate(aspp.branches):
        slots[f"classifier.0.convs.{index}.0"] = conv
        slots[f"classifier.0.convs.{index}.1"] = bn
    pool = len(rates) + 1  # its index 0 is the (weightless) adaptive average pooling
    slots[f"classifier.0.convs.{pool}.1"] = aspp.pool_branch[0]
    slots[f"classifier.0.convs.{pool}.2"] = aspp.pool_branch[1]
    slots["classifier.0.project.0"] = aspp.projection[0]
    slots["classifier.0.project.1"] = aspp.projection[1]
    return slots


def build_torchvision_deeplabv3(arch, num_classes, aux=False, input_shape=(None, None, 3)):
    """The Keras twin of torchvision's `arch`, with random weights.

    Returns:
        (model, slots): a `SegmentationModel` from float RGB in [0, 255] (B, H, W, 3) to float32
        logits (B, H, W, num_classes), and {state-dict key prefix: Keras layer}.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is unknown; choose one of: {', '.join(ARCHS)}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be an integer ≥ 1")
    images = keras.Input(shape=tuple(input_shape), name="image")
    backbone_slots = StateDictSlots("backbone.", strip="backbone.")
    maps = ARCHS[arch].backbone(input_shape, backbone_slots)(images)
    head = StateDictSlots()
    aspp = ASPP(
        HEAD_CHANNELS, RATES, ASPP_DROPOUT, TORCH_MOMENTUM, HEAD_EPSILON, name="classifier.0"
    )
    x = head.conv(aspp(maps["high"]), "classifier.1", HEAD_CHANNELS, 3)
    x = keras.layers.ReLU(name="classifier.3")(head.batch_norm(x, "classifier.2", HEAD_EPSILON))
    coarse = head.conv(x, "classifier.4", int(num_classes), 1, bias=True)
    slots = {**backbone_slots.layers, **head.layers, **_aspp_slots(aspp, RATES)}
    if aux:
        aux_head = AuxiliaryHead(
            num_classes,
            maps["mid"].shape[-1] // 4,
            dropout=AUX_DROPOUT,
            align_corners=False,
            batchnorm_momentum=TORCH_MOMENTUM,
            batchnorm_epsilon=HEAD_EPSILON,
            name="aux_classifier",
        )
        coarse = aux_head([coarse, maps["mid"], images, images])
        slots.update(
            {
                "aux_classifier.0": aux_head.conv,
                "aux_classifier.1": aux_head.bn,
                "aux_classifier.4": aux_head.classifier,
            }
        )
    resize = ResizeLike("bilinear", align_corners=False, dtype="float32", name="logits")
    return SegmentationModel(images, resize([coarse, images]), name=arch), slots


def _resolve_weights(arch, weights):
    """A torchvision weights enum member's name (e.g. "COCO_WITH_VOC_LABELS_V1") → its state
    dict through torchvision (which downloads it); anything else is read by
    `read_state_dict`."""
    if names_torchvision_weights(weights):
        try:
            import torchvision
        except ImportError:
            raise ImportError(
                f"weights={weights!r} names torchvision weights, which need torchvision "
                "installed (and internet); or pass a .pth / .safetensors / .npz file"
            ) from None
        enum = getattr(torchvision.models.segmentation, ARCHS[arch].weights_enum)
        return read_state_dict(enum[weights].get_state_dict(progress=True))
    return read_state_dict(weights)


def from_torchvision(arch, weights, num_classes=None, aux=False, input_shape=(None, None, 3)):
    """torchvision's DeepLabV3 `arch` in Keras with `weights`: its logits equal torchvision's
    for the same image.

    Args:
        arch: "deeplabv3_resnet50", "deeplabv3_resnet101" or "deeplabv3_mobilenet_v3_large".
        weights: a `.pth`/`.pt` state dict (needs torch), a `.safetensors` or `.npz` file, a
            mapping key → array, or the name of a member of torchvision's weights enum for
            `arch` (e.g. "COCO_WITH_VOC_LABELS_V1": needs torchvision and internet).
        num_classes: None: the state dict's (its classifier's output channels); otherwise it
            must match them.
        aux: keep torchvision's auxiliary `FCNHead` (training only, absent from every export);
            without it, the state dict's `aux_classifier.*` keys are accepted and dropped.
        input_shape: (H, W, 3); H and W may be None.

    Returns:
        A `SegmentationModel` from float RGB in [0, 255] (B, H, W, 3) to float32 logits
        (B, H, W, K) at the input size; torchvision's ImageNet mean/std normalisation runs
        inside the model.

    Raises:
        StateDictError: a key is missing, unexpected or of the wrong shape (each is named).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is unknown; choose one of: {', '.join(ARCHS)}")
    state = _resolve_weights(arch, weights)
    if CLASSIFIER_KEY not in state:
        raise StateDictError(
            f"missing key {CLASSIFIER_KEY!r}: not a torchvision DeepLabV3 state dict"
        )
    num_classes = state[CLASSIFIER_KEY].shape[0] if num_classes is None else num_classes
    model, slots = build_torchvision_deeplabv3(arch, num_classes, aux, input_shape)
    load_state_dict(slots, state, ignored_prefixes=() if aux else ("aux_classifier.",))
    return model
