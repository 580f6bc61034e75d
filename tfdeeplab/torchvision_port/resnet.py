"""torchvision's ResNet-50 / ResNet-101 as a dilated Keras feature extractor, layer for layer.

What differs from keras.applications' ResNet (v1) and is reproduced here
(torchvision/models/resnet.py):
- v1.5 bottlenecks: the stride is on the 3×3 convolution, not on the first 1×1;
- symmetric padding (7×7/2 stem with padding 3, 3×3/2 max pool with padding 1);
- BatchNorm epsilon 1e-5;
- `replace_stride_with_dilation`: a dilated stage's first block keeps the *previous* stage's
  dilation, and only its later blocks take the new one (`ResNet._make_layer`); its 1×1
  projection shortcut has stride 1.

Layer names are the state-dict keys of torchvision's modules (`layer3.0.conv2`, `bn1`, ...).
"""

import keras

from tfdeeplab.layers.image_normalization import ImageNormalization, NormalizationMode
from tfdeeplab.torchvision_port.layers import StateDictSlots

EPSILON = 1e-5
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Output channels / 4 of each stage's bottlenecks (torchvision's `planes`).
PLANES = (64, 128, 256, 512)
EXPANSION = 4
# torchvision's replace_stride_with_dilation for layer2, layer3, layer4 at each output stride.
DILATED_STAGES = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}


def _bottleneck(slots, x, key, planes, stride, dilation, project):
    """torchvision's `Bottleneck` (v1.5) named `key` (e.g. "layer2.0")."""
    identity = x
    out = slots.conv(x, f"{key}.conv1", planes, 1)
    out = keras.layers.ReLU(name=slots.name(f"{key}.relu1"))(
        slots.batch_norm(out, f"{key}.bn1", EPSILON)
    )
    out = slots.conv(out, f"{key}.conv2", planes, 3, stride=stride, dilation=dilation)
    out = keras.layers.ReLU(name=slots.name(f"{key}.relu2"))(
        slots.batch_norm(out, f"{key}.bn2", EPSILON)
    )
    out = slots.batch_norm(
        slots.conv(out, f"{key}.conv3", planes * EXPANSION, 1), f"{key}.bn3", EPSILON
    )
    if project:
        identity = slots.conv(x, f"{key}.downsample.0", planes * EXPANSION, 1, stride=stride)
        identity = slots.batch_norm(identity, f"{key}.downsample.1", EPSILON)
    out = keras.layers.Add(name=slots.name(f"{key}.add"))([out, identity])
    return keras.layers.ReLU(name=slots.name(f"{key}.relu"))(out)


def resnet_tv(depth=50, output_stride=8, input_shape=(None, None, 3), slots=None):
    """torchvision's `resnet50` / `resnet101` trunk with `replace_stride_with_dilation` chosen by
    `output_stride` (8: [False, True, True], as `deeplabv3_resnet*` builds it).

    Args:
        depth: 50 or 101.
        output_stride: 8, 16 or 32.
        input_shape: (H, W, 3); H and W may be None.
        slots: a `StateDictSlots` that records each layer's state-dict prefix (default: a new
            one with prefix "backbone.", as in torchvision's DeepLabV3).

    Returns:
        A functional `keras.Model` named "backbone" from float RGB in [0, 255] (torchvision's
        ImageNet mean/std normalisation inside) to {"low": layer1 (stride 4, 256 channels),
        "mid": layer3 (1024 channels, torchvision's auxiliary input), "high": layer4 (2048
        channels, stride `output_stride`)}.
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth={depth!r} is not supported; choose one of: 50, 101")
    if output_stride not in DILATED_STAGES:
        raise ValueError(f"output_stride={output_stride!r}; choose one of: 8, 16, 32")
    slots = slots or StateDictSlots("backbone.", strip="backbone.")
    images = keras.Input(shape=tuple(input_shape), name="image")
    x = ImageNormalization(NormalizationMode.TORCH, name="normalization")(images)
    x = slots.conv(x, "conv1", 64, 7, stride=2)
    x = keras.layers.ReLU(name=slots.name("relu"))(slots.batch_norm(x, "bn1", EPSILON))
    x = keras.layers.ZeroPadding2D(1, name=slots.name("maxpool.pad"))(x)  # after a ReLU: ≥ 0
    x = keras.layers.MaxPooling2D(3, 2, name=slots.name("maxpool"))(x)
    dilation, channels, stages = 1, 64, []
    for index, (planes, blocks) in enumerate(zip(PLANES, DEPTHS[depth], strict=True)):
        stride, previous = (1 if index == 0 else 2), dilation
        if index > 0 and DILATED_STAGES[output_stride][index - 1]:
            dilation, stride = dilation * stride, 1
        for block in range(blocks):
            key = f"layer{index + 1}.{block}"
            if block == 0:
                project = stride != 1 or channels != planes * EXPANSION
                x = _bottleneck(slots, x, key, planes, stride, previous, project)
            else:
                x = _bottleneck(slots, x, key, planes, 1, dilation, False)
            channels = planes * EXPANSION
        stages.append(x)
    outputs = {"low": stages[0], "mid": stages[2], "high": stages[3]}
    return keras.Model(images, outputs, name="backbone")
