"""DeepLabV3+'s decoder (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation", arXiv:1802.02611, section 3.1 and figure 2).

The ASPP features (stride 8-32) are upsampled bilinearly to the stride-4 "low" backbone map,
concatenated with a 1×1 projection of that map to a few channels (48: the paper's table 1 found
that 48-64 channels keep the low-level features from outweighing the encoder's), and refined by
two 3×3 convolutions. The 3×3 convolutions are depthwise-separable as in the paper's Xception
model and DeepLab's code (`decoder_use_separable_conv`), each part followed by BN + ReLU: at
stride 4 a dense 3×3 convolution over 304 channels would cost more than MobileNetV2 itself.

Built from builtin Keras layers, `FusedBatchNormalization` and `ResizeLike` as nodes of the
functional model, so SavedModel, TFLite (CONV_2D, DEPTHWISE_CONV_2D, RESIZE_BILINEAR,
CONCATENATION) and the tf_keras bridge of `converters` take it as they are.
"""

import keras

from tfdeeplab.layers.fused_batch_norm import FusedBatchNormalization
from tfdeeplab.layers.resize_like import ResizeLike

# Channels of the projected stride-4 features (the paper's table 1).
LOW_LEVEL_FILTERS = 48


def _bn_relu(x, name, momentum):
    x = FusedBatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _separable(x, filters, name, momentum):
    """Depthwise 3×3 + BN + ReLU, then pointwise 1×1 + BN + ReLU (DeepLab's
    `split_separable_conv2d`)."""
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
    x = _bn_relu(x, f"{name}_depthwise", momentum)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pointwise")(x)
    return _bn_relu(x, f"{name}_pointwise", momentum)


def deeplabv3plus_decoder(
    features,
    low,
    filters=256,
    low_filters=LOW_LEVEL_FILTERS,
    batchnorm_momentum=0.99,
    align_corners=True,
    name="decoder",
):
    """Applies DeepLabV3+'s decoder to symbolic tensors of a functional model.

    Args:
        features: the ASPP output (B, h, w, C).
        low: the backbone's stride-4 map (B, H4, W4, C_low).
        filters: channels of the two separable 3×3 convolutions (256 in the paper).
        low_filters: channels of the projected stride-4 map.
        batchnorm_momentum: momentum of the BatchNormalization layers.
        align_corners: the pixel-grid convention of the upsampling (see
            `tfdeeplab.layers.resize_like`).
        name: prefix of the layer names.

    Returns:
        (B, H4, W4, filters) decoded features at stride 4.
    """
    for label, value in (("filters", filters), ("low_filters", low_filters)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{label}={value!r} must be a positive integer")
    projected = keras.layers.Conv2D(low_filters, 1, use_bias=False, name=f"{name}_low")(low)
    projected = _bn_relu(projected, f"{name}_low", batchnorm_momentum)
    upsampled = ResizeLike("bilinear", align_corners, name=f"{name}_upsample")([features, low])
    x = keras.layers.Concatenate(name=f"{name}_concat")([upsampled, projected])
    x = _separable(x, filters, f"{name}_conv1", batchnorm_momentum)
    return _separable(x, filters, f"{name}_conv2", batchnorm_momentum)
