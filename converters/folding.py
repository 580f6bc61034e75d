"""The input normalisation folded into the first convolution, for export.

tfdeeplab models take RGB in [0, 255] and normalise inside the graph (`ImageNormalization`:
x · s + o per channel). Exported as it is, that is a MUL and an ADD broadcasting a 3-vector over
every pixel; in an int8 MobileNetV2 DeepLabV3 at 257² XNNPACK spends 0.3–0.4 ms of 2.5 ms on
them (2 threads), longer than on the first convolution. With n = -o / s, the pixel that
normalises to zero,

    x · s + o = (x - n) · s,  so  conv(x · s + o) = conv'(x - n),  W'[.., c, :] = W[.., c, :] · s[c]

with the same bias and the same padding: zeros padded around x - n are the zeros padded around
the normalised image, so the fold is exact at the borders too (a ZeroPadding2D in between, as in
ResNet, pads the same zeros). The file then has one SUB of a scalar (127.5 for MobileNetV2 and
Xception; a 3-vector for the caffe and torch modes, whose BGR order goes into W' as well) in
front of the first convolution (with ASPP's folded BN and the float upsampling of
`converters.tflite`: 2.3 → 1.7 ms int8, 3.7 → 3.5 ms fp32 at 257²,
benchmarks/BEFORE_AFTER_257.md). Models whose normalisation feeds anything else are returned
unchanged, and so are models that pad the image
to an aligned size first (`AlignedPadding`) at the size exported (not s·k + 1, or dynamic):
TensorFlow's converter merges that padding's ADD of the mean colour with the SUB into one
tensor calibrated over both ranges (int8 scale 1.5 instead of 1.0; the tiny test model's int8
agreement with Keras fell from 0.96 to 0.91).
"""

import keras
import numpy as np

from converters.metadata import _all_layers
from tfdeeplab.layers.image_normalization import ImageNormalization, NormalizationMode
from tfdeeplab.layers.resize_like import AlignedPadding, aligned_size


def _foldable_pairs(model):
    """(normalisation, conv) for every `ImageNormalization` (at any depth) whose output goes
    to one plain Conv2D only, directly or through one ZeroPadding2D."""
    pairs = []
    for layer in _all_layers(model):
        if not isinstance(layer, ImageNormalization):
            continue
        consumer = _only_consumer(layer)
        if isinstance(consumer, keras.layers.ZeroPadding2D):
            consumer = _only_consumer(consumer)
        if type(consumer) is keras.layers.Conv2D and consumer.groups == 1:
            pairs.append((layer, consumer))
    return pairs


def _only_consumer(layer):
    nodes = layer._outbound_nodes
    return nodes[0].operation if len(nodes) == 1 else None


def _neutral_pixel(normalization):
    """Per raw channel, the value that `normalization` maps to 0 (-offset / scale, in the raw
    image's channel order); one float when every channel has the same."""
    neutral = -normalization.offset / normalization.scale
    if normalization.mode is NormalizationMode.CAFFE:  # output channel j reads colour 2 - j
        neutral = neutral[::-1]
    if np.allclose(neutral, neutral[0], rtol=0, atol=1e-6):
        return float(neutral[0])
    return neutral.astype("float32")


def _folded_conv(normalization, conv):
    """A Conv2D on centred raw pixels (`_neutral_pixel` subtracted) equal to
    `conv(normalization(x))`: its padding zeros are normalised zeros, its bias is unchanged."""
    kernel, *bias = conv.get_weights()
    scaled = kernel * normalization.scale[None, None, :, None]
    if normalization.mode is NormalizationMode.CAFFE:  # input channel j is colour 2 - j
        scaled = scaled[:, :, ::-1, :]
    folded = conv.__class__.from_config({**conv.get_config(), "name": f"{conv.name}_on_raw_pixels"})
    return folded, [scaled.astype("float32"), *bias]


def fold_input_normalization(model, input_size=None):
    """`model` with each foldable input normalisation merged into the convolution after it
    (see the module), and the names of the convolutions folded; `model` itself and [] when
    there are none. The other layers are shared with `model`.

    Args:
        model: a Keras 3 model.
        input_size: (H, W) the model will run at; None: any size (dynamic).
    """
    pairs = _foldable_pairs(model)
    if not pairs or _pads_to_align(model, input_size):
        return model, []
    normalizations = {id(norm): norm for norm, _ in pairs}
    folds = {id(conv): norm for norm, conv in pairs}

    def replay(layer, *args, **kwargs):
        if id(layer) in normalizations:  # centring only: zero stays zero through the padding
            return args[0] - _neutral_pixel(layer)
        if id(layer) not in folds:
            return layer(*args, **kwargs)
        folded, weights = _folded_conv(folds[id(layer)], layer)
        outputs = folded(*args, **kwargs)
        folded.set_weights(weights)
        return outputs

    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=replay, recursive=True
    )
    return clone, sorted(conv.name for _, conv in pairs)


def _pads_to_align(model, input_size):
    paddings = [layer for layer in _all_layers(model) if isinstance(layer, AlignedPadding)]
    if not paddings:
        return False
    if input_size is None or None in tuple(input_size):
        return True
    return any(aligned_size(s, layer.stride) != s for layer in paddings for s in input_size)
