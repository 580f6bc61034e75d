"""torchvision's `mobilenet_v3_large(dilated=True)` features as a Keras feature extractor, layer
for layer (torchvision/models/mobilenetv3.py, `_mobilenet_v3_conf` and `InvertedResidual`).

- Every `Conv2dNormActivation` pads symmetrically by (kernel - 1) // 2 · dilation; BatchNorm
  epsilon 1e-3 (torchvision's MobileNetV3 norm layer); Hardswish / ReLU as configured.
- Squeeze-and-excitation: global average → 1×1 convolution (with bias) to
  make_divisible(expanded / 4, 8) channels → ReLU → 1×1 convolution back → Hardsigmoid → scale.
- `dilated=True` (what `deeplabv3_mobilenet_v3_large` builds): the last stage (C4) runs at
  stride 1 with dilation 2 in all three of its blocks, so the features end at stride 16.
- A residual is added where the *configured* stride is 1 and the channels match, so C4's first
  block (configured stride 2) has none although it runs at stride 1.

Layer names are the state-dict keys below torchvision's `features` (`3.block.1.0`, ...).
"""

import keras

from tfdeeplab.layers.image_normalization import ImageNormalization, NormalizationMode
from tfdeeplab.torchvision_port.layers import StateDictSlots

EPSILON = 1e-3
# (input, kernel, expanded, output, squeeze-excitation, activation, stride, dilated) of
# mobilenet_v3_large's 15 inverted residual blocks (width 1.0, full tail).
LARGE_BLOCKS = (
    (16, 3, 16, 16, False, "relu", 1, False),
    (16, 3, 64, 24, False, "relu", 2, False),
    (24, 3, 72, 24, False, "relu", 1, False),
    (24, 5, 72, 40, True, "relu", 2, False),
    (40, 5, 120, 40, True, "relu", 1, False),
    (40, 5, 120, 40, True, "relu", 1, False),
    (40, 3, 240, 80, False, "hard_silu", 2, False),
    (80, 3, 200, 80, False, "hard_silu", 1, False),
    (80, 3, 184, 80, False, "hard_silu", 1, False),
    (80, 3, 184, 80, False, "hard_silu", 1, False),
    (80, 3, 480, 112, True, "hard_silu", 1, False),
    (112, 3, 672, 112, True, "hard_silu", 1, False),
    (112, 5, 672, 160, True, "hard_silu", 2, True),
    (160, 5, 960, 160, True, "hard_silu", 1, True),
    (160, 5, 960, 160, True, "hard_silu", 1, True),
)
# Indices in `features` of what DeepLab reads: the last block at stride 4 (C1's stage), the
# auxiliary head's input (C2, stride 8, `_deeplabv3_mobilenetv3`'s aux_pos) and the last
# 1×1 convolution (C5, 960 channels).
LOW_INDEX, MID_INDEX = 3, 4


def make_divisible(value, divisor=8):
    """torchvision's `_make_divisible`: the nearest multiple of `divisor`, at least `divisor`
    and never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_act(slots, x, key, filters, kernel, activation, stride=1, dilation=1, groups=1):
    """torchvision's `Conv2dNormActivation` named `key`: convolution `key`.0, BN `key`.1."""
    x = slots.conv(x, f"{key}.0", filters, kernel, stride, dilation, groups=groups)
    x = slots.batch_norm(x, f"{key}.1", EPSILON)
    if activation is None:
        return x
    return keras.layers.Activation(activation, name=slots.name(f"{key}.2"))(x)


def _squeeze_excitation(slots, x, key):
    channels = x.shape[-1]
    scale = keras.layers.GlobalAveragePooling2D(keepdims=True, name=slots.name(f"{key}.avgpool"))(x)
    scale = slots.conv(scale, f"{key}.fc1", make_divisible(channels // 4), 1, bias=True)
    scale = keras.layers.ReLU(name=slots.name(f"{key}.activation"))(scale)
    scale = slots.conv(scale, f"{key}.fc2", channels, 1, bias=True)
    scale = keras.layers.Activation("hard_sigmoid", name=slots.name(f"{key}.scale"))(scale)
    return keras.layers.Multiply(name=slots.name(key))([x, scale])


def _inverted_residual(slots, x, index, config, dilated):
    inputs, kernel, expanded, outputs, se, activation, stride, dilate = config
    key, part = f"{index}.block", 0
    y = x
    if expanded != inputs:
        y = _conv_bn_act(slots, y, f"{key}.{part}", expanded, 1, activation)
        part += 1
    dilation = 2 if dilated and dilate else 1
    y = _conv_bn_act(
        slots,
        y,
        f"{key}.{part}",
        expanded,
        kernel,
        activation,
        stride=1 if dilation > 1 else stride,
        dilation=dilation,
        groups=expanded,
    )
    part += 1
    if se:
        y = _squeeze_excitation(slots, y, f"{key}.{part}")
        part += 1
    y = _conv_bn_act(slots, y, f"{key}.{part}", outputs, 1, None)
    if stride == 1 and inputs == outputs:
        y = keras.layers.Add(name=slots.name(f"{index}.add"))([y, x])
    return y


def mobilenet_v3_large_tv(dilated=True, input_shape=(None, None, 3), slots=None):
    """torchvision's `mobilenet_v3_large(dilated=dilated).features`.

    Args:
        dilated: True (stride 16, as `deeplabv3_mobilenet_v3_large`) or False (stride 32).
        input_shape: (H, W, 3); H and W may be None.
        slots: a `StateDictSlots` recording each layer's state-dict prefix (default: prefix
            "backbone.", as in torchvision's DeepLabV3, which wraps `features` directly).

    Returns:
        A functional `keras.Model` named "backbone" from float RGB in [0, 255] (ImageNet
        mean/std normalisation inside) to {"low": features[3] (stride 4, 24 channels), "mid":
        features[4] (stride 8, 40 channels), "high": features[16] (960 channels)}.
    """
    slots = slots or StateDictSlots("backbone.", strip="backbone.")
    images = keras.Input(shape=tuple(input_shape), name="image")
    x = ImageNormalization(NormalizationMode.TORCH, name="normalization")(images)
    x = _conv_bn_act(slots, x, "0", 16, 3, "hard_silu", stride=2)
    taps = {}
    for index, config in enumerate(LARGE_BLOCKS, start=1):
        x = _inverted_residual(slots, x, index, config, dilated)
        taps[index] = x
    last = len(LARGE_BLOCKS) + 1
    x = _conv_bn_act(slots, x, str(last), 6 * LARGE_BLOCKS[-1][3], 1, "hard_silu")
    outputs = {"low": taps[LOW_INDEX], "mid": taps[MID_INDEX], "high": x}
    return keras.Model(images, outputs, name="backbone")
