"""PointRend's point head and its adaptive-subdivision inference (arXiv:1912.08193, section 3).

Shape legend: B batch, H height, W width, C fine-feature channels, K classes, N points.
"""

import keras
import tensorflow as tf

from tfdeeplab.layers.point_features import most_uncertain_cells, point_sample, uncertainty


@keras.saving.register_keras_serializable(package="tfdeeplab")
class PointHead(keras.layers.Layer):
    """The point head: per-point MLP over fine features and the coarse prediction.

    As in the paper (and detectron2's StandardPointHead), the coarse prediction is concatenated
    to the input of every hidden layer and of the final linear predictor.

    Args:
        num_classes: K.
        channels: width of the hidden layers (256).
        num_layers: hidden layers (3).

    Call with `[fine (B, N, C), coarse (B, N, K)]`; returns point logits (B, N, K).
    """

    def __init__(self, num_classes, channels=256, num_layers=3, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.num_layers = int(num_layers)
        self.hidden = [
            keras.layers.Dense(self.channels, activation="relu", name=f"fc{i}")
            for i in range(self.num_layers)
        ]
        self.predictor = keras.layers.Dense(self.num_classes, name="predictor")

    def build(self, input_shapes):
        fine_shape, _ = input_shapes
        width = fine_shape[-1] + self.num_classes
        for layer in self.hidden:
            layer.build((None, None, width))
            width = self.channels + self.num_classes
        self.predictor.build((None, None, width))

    def call(self, inputs):
        fine, coarse = inputs
        coarse = tf.cast(coarse, self.compute_dtype)
        x = tf.concat([tf.cast(fine, self.compute_dtype), coarse], axis=-1)
        for layer in self.hidden:
            x = tf.concat([layer(x), coarse], axis=-1)
        return self.predictor(x)

    def compute_output_shape(self, input_shapes):
        return (*input_shapes[1][:-1], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "channels": self.channels,
            "num_layers": self.num_layers,
        }


def _replace_rows(flat, indices, rows):
    """flat (B, M, K) with rows `indices` (B, N) replaced by `rows` (B, N, K).

    Written with SCATTER_ND (a TFLite builtin) into zeros plus a mask, not
    tensor_scatter_nd_update; top-k indices are distinct, so nothing is summed twice.
    """
    shape = tf.shape(flat, out_type=tf.int32)
    batch = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(indices))
    where = tf.stack([batch, indices], axis=-1)
    ones = tf.ones(tf.shape(indices), flat.dtype)[..., None]
    mask = tf.scatter_nd(where, ones, tf.stack([shape[0], shape[1], 1]))
    values = tf.scatter_nd(where, tf.cast(rows, flat.dtype), shape)
    return flat * (1 - mask) + values


@keras.saving.register_keras_serializable(package="tfdeeplab")
class PointRendRefiner(keras.layers.Layer):
    """Adaptive subdivision: from coarse logits, `steps` times upsample 2× bilinearly, re-predict
    the N most uncertain cells with the point head, write them back; then resize to the image.

    Args:
        num_classes: K.
        steps: subdivision steps; each halves the stride (3 takes OS 16 to stride 2).
        points: N per step; None re-predicts as many cells as the map after the first step has
            (the stride-OS/2 map), capped by the cells of each map.
        channels, num_layers: the point head's width and depth.

    Call with `[coarse logits (B, h, w, K), fine features (B, H4, W4, C), image (B, H, W, 3)]`;
    returns logits (B, H, W, K). The point head is `self.head`, shared with training.
    """

    def __init__(self, num_classes, steps=3, points=None, channels=256, num_layers=3, **kwargs):
        super().__init__(**kwargs)
        if steps < 0 or (points is not None and points < 1):
            raise ValueError(f"steps={steps} must be ≥ 0 and points={points} ≥ 1 (or None)")
        self.num_classes = int(num_classes)
        self.steps = int(steps)
        self.points = None if points is None else int(points)
        self.head = PointHead(num_classes, channels, num_layers, name="point_head")

    def build(self, input_shapes):
        _, fine_shape, _ = input_shapes
        self.head.build(((None, None, fine_shape[-1]), (None, None, self.num_classes)))

    def call(self, inputs):
        coarse, fine, image = inputs
        logits = tf.cast(coarse, tf.float32)
        cap = None
        for _ in range(self.steps):
            shape = tf.shape(logits)
            height, width = 2 * shape[1], 2 * shape[2]
            logits = tf.image.resize(logits, (height, width), method="bilinear")
            cells = height * width
            if cap is None:
                cap = cells if self.points is None else tf.constant(self.points)
            indices, points = most_uncertain_cells(uncertainty(logits), tf.minimum(cap, cells))
            flat = tf.reshape(logits, (shape[0], cells, self.num_classes))
            refined = self.head(
                [point_sample(fine, points), tf.gather(flat, indices, batch_dims=1)]
            )
            flat = _replace_rows(flat, indices, tf.cast(refined, tf.float32))
            logits = tf.reshape(flat, (shape[0], height, width, self.num_classes))
        return tf.image.resize(logits, tf.shape(image)[1:3], method="bilinear")

    def compute_output_shape(self, input_shapes):
        image_shape = input_shapes[2]
        return (*image_shape[:3], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "steps": self.steps,
            "points": self.points,
            "channels": self.head.channels,
            "num_layers": self.head.num_layers,
        }
