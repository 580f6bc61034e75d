"""Dilated backbones built from the keras.applications architectures.

Each backbone replays a keras.applications network layer by layer (`keras.models.clone_model`
with a `call_function`), keeping every layer name and weight shape, so ImageNet weights and
weights files of keras.applications load unchanged. While replaying, every tensor carries two
strides: the *nominal* one of the original network and the *actual* one of the rebuilt network.
A stride that would take the actual stride past `output_stride` becomes 1, and every later kernel
gets dilation nominal / actual, so its receptive field is that of the original network
(DeepLabV3, arXiv:1706.05587, section 3.2; torchvision's `replace_stride_with_dilation`).

Non-overlapping pools pad "same", so every map has ceil(size / stride) cells. Pooling layers
whose stride is removed become odd-sized (2 → 3), stride 1, "same", centred on the
pixel as in DeepLab-v1. Input normalisation is part of the graph: the backbone takes float RGB in
[0, 255].
"""

import dataclasses
from collections.abc import Callable

import keras

from tfdeeplab.layers.atrous import AtrousConv2D, AtrousDepthwiseConv2D, AtrousSeparableConv2D
from tfdeeplab.layers.fused_batch_norm import FusedBatchNormalization
from tfdeeplab.layers.image_normalization import ImageNormalization, NormalizationMode
from tfdeeplab.torchvision_port.backbones import TORCHVISION_BACKBONES, torchvision_backbone

OUTPUT_STRIDES = (8, 16, 32)

_ATROUS_CLASSES = {
    keras.layers.Conv2D: AtrousConv2D,
    keras.layers.DepthwiseConv2D: AtrousDepthwiseConv2D,
    keras.layers.SeparableConv2D: AtrousSeparableConv2D,
}
_POOLING_CLASSES = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to turn one keras.applications network into a dilated feature extractor.

    Attributes:
        application: the keras.applications constructor.
        normalization: the network's `preprocess_input` convention.
        low_layer: the layer whose output (or input, if `low_from_input`) is the stride-4 map.
        mid_layer: the layer whose output (or input, if `mid_from_input`) ends the stage before
            the last, at nominal stride 16: what an auxiliary head reads (torchvision's layer3).
        high_layer: the layer whose output is the "high" map; None takes the network's output.
            MobileNetV2 reads its last inverted-residual block (320·alpha channels), as DeepLab's
            MobileNetV2 does, not keras.applications' final 1×1 expansion to 1280 channels,
            which belongs to the classifier.
        same_padding: (ZeroPadding2D layer, its consumer) pairs; the padding layer is dropped
            and the consumer pads "same" instead.
            MobileNetV2 pads (0, 1) before each strided depthwise convolution when H and W are
            dynamic: identical to "same" for even sizes, but it floors odd ones (513 → 128 at
            stride 4) where "same" gives ceil(513 / 4) = 129, as the static-shape network does.
        multi_grid_layers: the 3×3 convolutions of the last block whose rates `multi_grid`
            multiplies (ResNets only).
        supports_alpha: whether the width multiplier `alpha` applies.
    """

    application: Callable
    normalization: NormalizationMode
    low_layer: str
    mid_layer: str
    low_from_input: bool = False
    mid_from_input: bool = False
    high_layer: str | None = None
    same_padding: tuple[tuple[str, str], ...] = ()
    multi_grid_layers: tuple = ()
    supports_alpha: bool = False


_RESNET_MULTI_GRID = tuple(f"conv5_block{i}_2_conv" for i in (1, 2, 3))

BACKBONES = {
    "resnet50": BackboneSpec(
        keras.applications.ResNet50,
        NormalizationMode.CAFFE,
        "conv2_block3_out",
        "conv4_block6_out",
        multi_grid_layers=_RESNET_MULTI_GRID,
    ),
    "resnet101": BackboneSpec(
        keras.applications.ResNet101,
        NormalizationMode.CAFFE,
        "conv2_block3_out",
        "conv4_block23_out",
        multi_grid_layers=_RESNET_MULTI_GRID,
    ),
    "vgg16": BackboneSpec(
        keras.applications.VGG16, NormalizationMode.CAFFE, "block3_conv3", "block4_pool"
    ),
    "densenet121": BackboneSpec(
        keras.applications.DenseNet121,
        NormalizationMode.TORCH,
        "pool2_relu",
        "conv4_block24_concat",
    ),
    "mobilenetv2": BackboneSpec(
        keras.applications.MobileNetV2,
        NormalizationMode.TF,
        "block_3_expand_relu",
        "block_12_add",
        high_layer="block_16_project_BN",
        same_padding=tuple((f"block_{i}_pad", f"block_{i}_depthwise") for i in (1, 3, 6, 13)),
        supports_alpha=True,
    ),
    # The stride-4 map is the sum closing block 2, an auto-named Add layer; its consumer is not.
    "xception": BackboneSpec(
        keras.applications.Xception,
        NormalizationMode.TF,
        "block3_sepconv1_act",
        "block13_sepconv1_act",  # its input: the sum closing the middle flow
        low_from_input=True,
        mid_from_input=True,
    ),
}


@dataclasses.dataclass(frozen=True)
class _Strides:
    nominal: int
    actual: int

    @property
    def rate(self):
        return self.nominal // self.actual


def _choose(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is not supported; choose one of: {', '.join(map(str, allowed))}"
        )


def backbone_names():
    """Every backbone `get_backbone` builds: keras.applications' (`BACKBONES`) and
    torchvision's layouts (`TORCHVISION_BACKBONES`, names ending in "_tv")."""
    return (*BACKBONES, *TORCHVISION_BACKBONES)


def _validate(name, output_stride, multi_grid, alpha):
    _choose("backbone", name, backbone_names())
    _choose("output_stride", output_stride, OUTPUT_STRIDES)
    spec = BACKBONES[name]
    if multi_grid is not None:
        if not spec.multi_grid_layers:
            with_grid = [n for n, s in BACKBONES.items() if s.multi_grid_layers]
            raise ValueError(
                f"multi_grid applies to the last ResNet block; backbone={name!r} has none. "
                f"Use one of: {', '.join(with_grid)}, or multi_grid=None."
            )
        if len(multi_grid) != len(spec.multi_grid_layers) or any(
            int(g) != g or g < 1 for g in multi_grid
        ):
            raise ValueError(
                f"multi_grid={multi_grid!r} must be {len(spec.multi_grid_layers)} positive "
                "integers, one per block of the last stage, e.g. (1, 2, 4)."
            )
    if not alpha > 0:
        raise ValueError(f"alpha={alpha!r} must be > 0.")
    if alpha != 1.0 and not spec.supports_alpha:
        with_alpha = [n for n, s in BACKBONES.items() if s.supports_alpha]
        raise ValueError(
            f"alpha={alpha!r} applies only to: {', '.join(with_alpha)}; "
            f"backbone={name!r} takes alpha=1.0."
        )
    return spec


def _stride(layer):
    strides = getattr(layer, "strides", None)
    if strides is None or isinstance(layer, keras.layers.InputLayer):
        return 1
    if strides[0] != strides[1]:
        raise ValueError(f"layer '{layer.name}' has unequal strides {strides}")
    return int(strides[0])


def _rebuilt_layer(layer, stride, rate, same_padding, batchnorm_momentum):
    """A copy of `layer` with `stride`, dilation `rate`, optionally "same" padding and another
    BatchNormalization momentum."""
    config = layer.get_config()
    cls = type(layer)
    if batchnorm_momentum is not None and isinstance(layer, keras.layers.BatchNormalization):
        config["momentum"] = batchnorm_momentum
    if isinstance(layer, _POOLING_CLASSES) and config["pool_size"] == config["strides"]:
        # Non-overlapping "valid" pools (VGG, DenseNet transitions) floor odd sizes; "same"
        # gives the same values for even sizes and ceil(H / 2) for odd ones.
        config["padding"] = "same"
    if _stride(layer) != stride:
        config["strides"] = (stride, stride)
        if isinstance(layer, _POOLING_CLASSES):
            size = config["pool_size"][0] | 1
            config.update(pool_size=(size, size), padding="same")
    if same_padding:
        config["padding"] = "same"
    kernel = config.get("kernel_size", (1, 1))
    if cls in _ATROUS_CLASSES and rate > 1 and max(kernel) > 1:
        config["dilation_rate"] = (rate, rate)
        cls = _ATROUS_CLASSES[cls]
    if cls is keras.layers.BatchNormalization:
        cls = FusedBatchNormalization  # same layer, fused training kernel
    return cls.from_config(config)


def get_backbone(
    name,
    output_stride=16,
    weights=None,
    input_shape=(None, None, 3),
    multi_grid=None,
    alpha=1.0,
    batchnorm_momentum=None,
    mid=False,
):
    """A dilated feature extractor following a keras.applications architecture.

    Args:
        name: one of `BACKBONES`: resnet50, resnet101, vgg16, densenet121, mobilenetv2,
            xception (keras.applications' layouts); or of `TORCHVISION_BACKBONES`: resnet50_tv,
            resnet101_tv, mobilenet_v3_large_tv (torchvision's layouts, for torchvision's
            weights; see `tfdeeplab.torchvision_port.backbones`).
        output_stride: 8, 16 or 32, the ratio of input size to "high" feature size.
        weights: None (random), "imagenet" (keras.applications' download), or the path of a
            keras.applications `include_top=False` weights file; for the "_tv" backbones, a
            torchvision classifier's state dict (file or mapping) or weights name.
        input_shape: (H, W, 3); H and W may be None.
        multi_grid: unit rates multiplying the last ResNet block's rates, e.g. (1, 2, 4).
        alpha: MobileNetV2 width multiplier.
        batchnorm_momentum: momentum of every BatchNormalization; None keeps the architecture's
            (0.999 in MobileNetV2, 0.99 elsewhere). Training from scratch or for a short budget
            needs a lower value: with 0.999 the moving statistics lag far behind the weights.
        mid: also return "mid", the end of the stage before the last (nominal stride 16; see
            `BackboneSpec.mid_layer`), for an auxiliary head.

    Returns:
        A functional `keras.Model` mapping float RGB images in [0, 255], (B, H, W, 3), to
        `{"low": (B, ceil(H/4), ceil(W/4), C_low), "high": (B, ceil(H/OS), ceil(W/OS), C_high)}`,
        with `mid`, also "mid": (B, ceil(H/min(OS, 16)), ceil(W/min(OS, 16)), C_mid).
        Xception keeps keras.applications' unpadded stem (needed for its weights to give the
        same features), so its maps can be one cell smaller than the ceiling.
    """
    if name in TORCHVISION_BACKBONES:
        if multi_grid is not None or alpha != 1.0:
            raise ValueError(
                f"backbone={name!r} takes neither multi_grid nor alpha (torchvision's layout)"
            )
        return torchvision_backbone(
            name, output_stride, weights, input_shape, batchnorm_momentum, mid
        )
    spec = _validate(name, output_stride, multi_grid, alpha)
    kwargs = {"alpha": alpha} if spec.supports_alpha else {}
    application = spec.application(
        include_top=False, weights=weights, input_shape=tuple(input_shape), **kwargs
    )
    taps = {"low": _tap(application, spec.low_layer, spec.low_from_input)}
    if mid:
        taps["mid"] = _tap(application, spec.mid_layer, spec.mid_from_input)
    high = _tap(application, spec.high_layer, False) if spec.high_layer else application.output
    taps["high"] = high
    source = keras.Model(application.input, list(taps.values()))

    grid = dict(zip(spec.multi_grid_layers, multi_grid, strict=True)) if multi_grid else {}
    dropped_padding = {pad for pad, _ in spec.same_padding}
    same_padding = {consumer for _, consumer in spec.same_padding}
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    normalized = ImageNormalization(spec.normalization, name="normalization")(inputs)
    strides = {id(normalized): _Strides(1, 1)}

    def replay(layer, *args, **kwargs):
        args = [normalized if arg is inputs else arg for arg in args]
        if layer.name in dropped_padding:
            return args[0]
        incoming = {strides[id(t)] for t in keras.tree.flatten(args) if id(t) in strides}
        if len(incoming) != 1:
            raise ValueError(f"layer '{layer.name}' joins maps of different strides: {incoming}")
        (current,) = incoming
        stride = _stride(layer)
        kept = stride if current.actual * stride <= output_stride else 1
        rate = current.rate * grid.get(layer.name, 1)
        rebuilt = _rebuilt_layer(layer, kept, rate, layer.name in same_padding, batchnorm_momentum)
        outputs = rebuilt(*args, **kwargs)
        rebuilt.set_weights(layer.get_weights())
        strides[id(outputs)] = _Strides(current.nominal * stride, current.actual * kept)
        return outputs

    clone = keras.models.clone_model(
        source, input_tensors=inputs, clone_function=lambda layer: layer, call_function=replay
    )
    outputs = dict(zip(taps, clone.outputs, strict=True))
    return keras.Model(inputs, outputs, name=f"{name}_os{output_stride}")


def _tap(application, layer_name, from_input):
    layer = application.get_layer(layer_name)
    return layer.input if from_input else layer.output
