"""Resizing under one of two pixel-grid conventions, and a layer that resizes a feature map to
the spatial size of another tensor (dynamic H and W).

- `align_corners=True` (DeepLab's): the first and last cells of both maps coincide, so cell i
  of an h-cell map sits on pixel i·(H - 1)/(h - 1). For H = s·k + 1 (513 = 16·32 + 1) that is
  pixel s·i, exactly where 'same'-padded stride-s backbones put it (`benchmarks.alignment`).
- `align_corners=False` (half-pixel centres, `tf.image.resize`, torchvision's bilinear): cell i
  sits on pixel (i + 0.5)·H/h - 0.5.

TFLite's RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR implement both (float and int8).
"""

import keras
import tensorflow as tf

INTERPOLATIONS = ("bilinear", "nearest")
# The largest output stride: 32·k + 1 inputs are s·k' + 1 for every stride s in (8, 16, 32).
ALIGNED_STRIDE = 32


def resize(x, size, method="bilinear", align_corners=False):
    """`x` (B, h, w, C) resized to `size` (H, W) with `method` under the chosen convention.

    Bilinear results are float32 (as `tf.image.resize`'s).
    """
    if method not in INTERPOLATIONS:
        raise ValueError(
            f"method={method!r} is unknown; choose one of: {', '.join(INTERPOLATIONS)}"
        )
    if not align_corners:
        return tf.image.resize(x, size, method=method)
    # The ops behind tf.compat.v1's resizes (tf.image.resize has no align_corners).
    if method == "bilinear":
        return tf.raw_ops.ResizeBilinear(
            images=tf.cast(x, tf.float32), size=size, align_corners=True
        )
    return tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=True)


def aligned_size(size, stride=ALIGNED_STRIDE):
    """The smallest s·k + 1 ≥ `size`: the input sizes whose stride-`stride` cells sit exactly on
    pixels s·i (e.g. 513 for 512 at stride 16 or 32)."""
    return -(-(int(size) - 1) // stride) * stride + 1


@keras.saving.register_keras_serializable(package="tfdeeplab")
class ResizeLike(keras.layers.Layer):
    """Resizes `inputs[0]` to the height and width of `inputs[1]`.

    When the reference's size is static at export time the size folds to a constant, which keeps
    the op delegable.

    Args:
        interpolation: "bilinear" or "nearest".
        align_corners: the pixel-grid convention (see the module docstring). False (half-pixel)
            is the default of the layer, so models saved before the option load unchanged;
            `DeepLabV3` builds with True.

    Call with `[x (B, h, w, C), reference (B, H, W, ...)]`; returns (B, H, W, C).
    """

    def __init__(self, interpolation="bilinear", align_corners=False, **kwargs):
        super().__init__(**kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation={interpolation!r} is unknown; choose one of: "
                f"{', '.join(INTERPOLATIONS)}"
            )
        self.interpolation = interpolation
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        resized = resize(x, size, self.interpolation, self.align_corners)
        return tf.cast(resized, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        x_shape, reference_shape = input_shapes
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "interpolation": self.interpolation,
            "align_corners": self.align_corners,
        }


# The ImageNet mean in [0, 255] RGB: the colour images are padded with (0 after normalisation).
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)


def _static_size(tensor):
    height, width = tensor.shape[1:3]
    return None if height is None or width is None else (int(height), int(width))


def pad_to_aligned(images, stride=ALIGNED_STRIDE, value=IMAGENET_MEAN_RGB):
    """`images` (B, H, W, C) padded at the bottom and right with `value` (one per channel) to
    the next `stride`·k + 1 pixels; unchanged, without an op, when the static size is that."""
    size = _static_size(images)
    if size is not None and all(aligned_size(s, stride) == s for s in size):
        return images
    shape = tf.shape(images)
    pad = [(-(shape[i] - 1) % stride) for i in (1, 2)]
    value = tf.constant(value, images.dtype)
    return tf.pad(images - value, [[0, 0], [0, pad[0]], [0, pad[1]], [0, 0]]) + value


def crop_like(x, reference):
    """`x` (B, H', W', C) cropped at the bottom and right to `reference`'s (B, H, W, ...)."""
    size = _static_size(reference)
    if size is not None and _static_size(x) == size:
        return x
    shape = tf.shape(reference)
    return x[:, : shape[1], : shape[2]]


@keras.saving.register_keras_serializable(package="tfdeeplab")
class AlignedPadding(keras.layers.Layer):
    """Pads images at the bottom and right to the next `stride`·k + 1 pixels with `value`.

    At those sizes every stride-2 layer of a 'same'-padded backbone pads symmetrically, so the
    cells of its stride-s maps sit exactly on pixels s·i, where corner-aligned resizing puts
    them; a model that pads its input first is aligned at every input size (512, 480×360, …),
    and `CropLike` takes its output back to the input's size. An input already of that size
    (static shape) passes through without an op.

    Args:
        stride: 32 aligns output strides 8, 16 and 32.
        value: the padding colour per channel, default the ImageNet mean RGB (in [0, 255]).

    Call with images (B, H, W, C); returns (B, H', W', C).
    """

    def __init__(self, stride=ALIGNED_STRIDE, value=IMAGENET_MEAN_RGB, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.value = tuple(float(v) for v in value)

    def call(self, images):
        return pad_to_aligned(images, self.stride, self.value)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        height = None if height is None else aligned_size(height, self.stride)
        width = None if width is None else aligned_size(width, self.stride)
        return (batch, height, width, channels)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "value": list(self.value)}


@keras.saving.register_keras_serializable(package="tfdeeplab")
class CropLike(keras.layers.Layer):
    """Crops `inputs[0]` (B, H', W', C) at the bottom and right to the height and width of
    `inputs[1]` (B, H, W, ...), H ≤ H' and W ≤ W'; the inverse of `AlignedPadding`."""

    def call(self, inputs):
        return crop_like(*inputs)

    def compute_output_shape(self, input_shapes):
        x_shape, reference_shape = input_shapes
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])
