"""Bilinear resizing of a feature map to the spatial size of another tensor (dynamic H and W)."""

import keras
import tensorflow as tf

INTERPOLATIONS = ("bilinear", "nearest")


@keras.saving.register_keras_serializable(package="tfdeeplab")
class ResizeLike(keras.layers.Layer):
    """Resizes `inputs[0]` to the height and width of `inputs[1]`.

    Uses half-pixel centres (`tf.image.resize`), which TFLite's RESIZE_BILINEAR / NEAREST_NEIGHBOR
    support. When the reference's size is static at export time the size folds to a constant, which
    keeps the op delegable.

    Args:
        interpolation: "bilinear" or "nearest".

    Call with `[x (B, h, w, C), reference (B, H, W, ...)]`; returns (B, H, W, C).
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation={interpolation!r} is unknown; choose one of: "
                f"{', '.join(INTERPOLATIONS)}"
            )
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        resized = tf.image.resize(x, size, method=self.interpolation)
        return tf.cast(resized, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        x_shape, reference_shape = input_shapes
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}
