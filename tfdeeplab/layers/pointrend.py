"""PointRend's point head and its adaptive-subdivision inference (arXiv:1912.08193, section 3).

Shape legend: B batch, H height, W width, C fine-feature channels, K classes, N points.
"""

import keras
import tensorflow as tf

from tfdeeplab.layers.point_features import (
    cell_rows,
    labels_at_points,
    most_uncertain_cells,
    point_sample,
    sample_training_points,
    scatter_cells,
    uncertainty,
)
from tfdeeplab.layers.resize_like import resize
from tfdeeplab.losses import point_loss, sparse_labels


def point_head_logits(inputs, hidden, predictor, dtype):
    """The point head's MLP: `[*fine parts (B, N, Cᵢ), coarse (B, N, K)]` → logits (B, N, K).

    `hidden` and `predictor` are dense layers (Keras 3 here, tf_keras in the QAT bridge); the
    coarse prediction joins the input of every one of them. Each layer reads its inputs by
    parts (`_dense_by_parts`), never as one concatenated tensor.
    """
    parts = [tf.cast(x, dtype) for x in inputs]
    coarse = parts[-1]
    for layer in hidden:
        parts = [_dense_by_parts(layer, parts, dtype), coarse]
    return _dense_by_parts(predictor, parts, dtype)


def _dense_by_parts(layer, parts, dtype):
    """`layer(concat(parts))` for a built Dense layer, as Σ partᵢ · kernel rowsᵢ + bias.

    The same values (a matmul of a concatenation is the sum of the parts' matmuls), but an int8
    file no longer puts the fine features, the coarse logits and the hidden activations on one
    concatenation's shared scale: the logits' range would clip or coarsen the features (and in a
    QAT file, where the fine features' range is fixed by fake-quant, it clipped the logits).
    """
    kernel = tf.split(tf.cast(layer.kernel, dtype), [x.shape[-1] for x in parts], axis=0)
    # The bias goes with the first part's matmul, as Dense's own (one FULLY_CONNECTED with
    # bias); a separate ADD of an untrained all-zero bias got a degenerate int8 scale.
    total = tf.nn.bias_add(tf.matmul(parts[0], kernel[0]), tf.cast(layer.bias, dtype))
    for x, rows in zip(parts[1:], kernel[1:], strict=True):
        total = total + tf.matmul(x, rows)
    return layer.activation(total)


def point_head_layers(dense, num_classes, channels, num_layers):
    """The head's hidden dense layers (ReLU) and linear predictor, made with `dense` (Keras 3's
    or tf_keras' Dense class)."""
    hidden = [dense(channels, activation="relu", name=f"fc{i}") for i in range(num_layers)]
    return hidden, dense(num_classes, name="predictor")


def build_point_head(hidden, predictor, fine_channels, num_classes):
    """Builds the head's layers for C = `fine_channels` inputs (all fine parts together); each
    sees the coarse K too."""
    width = fine_channels + num_classes
    for layer in hidden:
        layer.build((None, None, width))
        width = layer.units + num_classes
    predictor.build((None, None, width))


@keras.saving.register_keras_serializable(package="tfdeeplab")
class PointHead(keras.layers.Layer):
    """The point head: per-point MLP over fine features and the coarse prediction.

    As in the paper (and detectron2's StandardPointHead), the coarse prediction is concatenated
    to the input of every hidden layer and of the final linear predictor.

    Args:
        num_classes: K.
        channels: width of the hidden layers (256).
        num_layers: hidden layers (3).

    Call with `[fine (B, N, C), coarse (B, N, K)]`, or with the fine features in parts
    `[fine (B, N, C₁), pixels (B, N, C₂), …, coarse]`; returns point logits (B, N, K).
    """

    def __init__(self, num_classes, channels=256, num_layers=3, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.num_layers = int(num_layers)
        self.hidden, self.predictor = point_head_layers(
            keras.layers.Dense, self.num_classes, self.channels, self.num_layers
        )

    def build(self, input_shapes):
        channels = sum(shape[-1] for shape in input_shapes[:-1])
        build_point_head(self.hidden, self.predictor, channels, self.num_classes)

    def call(self, inputs):
        return point_head_logits(inputs, self.hidden, self.predictor, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        return (*input_shapes[-1][:-1], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "channels": self.channels,
            "num_layers": self.num_layers,
        }


def pixel_features(image, scale=None, offset=None):
    """The image as fine features of the point head, float32: [0, 255] → [-1, 1], or
    image · scale + offset per band (multispectral models: about ±1 for ±2 std)."""
    image = tf.cast(image, tf.float32)
    if scale is None:
        return image / 127.5 - 1.0
    return image * tf.constant(scale, tf.float32) + tf.constant(offset, tf.float32)


def fine_channels(input_shapes, image_features):
    """C, the fine features the point head reads per point, from a refiner's input shapes
    [coarse, fine, image]: the fine map's channels, plus the image's with `image_features`."""
    _, fine_shape, image_shape = input_shapes
    return fine_shape[-1] + (image_shape[-1] if image_features else 0)


def fine_points(fine, where, align_corners=False, pixels=None):
    """`point_sample` of the fine features at `where`, and of `pixels` (the image, see
    `pixel_features`) when given: a list of the head's fine parts."""
    sampled = point_sample(fine, where, align_corners)
    if pixels is None:
        return [sampled]
    return [sampled, point_sample(tf.cast(pixels, sampled.dtype), where, align_corners)]


def points_per_step(size, points=None, points_stride=None):
    """`points`, or with `points_stride` s (and `points` None) the cells of the stride-s map
    of an image of `size` (H, W), ceil(H / s) · ceil(W / s), as an int32 scalar."""
    if points is not None or points_stride is None:
        return points
    cells = -(-tf.cast(size, tf.int32) // points_stride)
    return cells[0] * cells[1]


def adaptive_subdivision(
    coarse, fine, size, head, steps, points=None, align_corners=False, pixels=None
):
    """PointRend inference: `steps` times, upsample 2× and re-predict the most uncertain cells.

    As in training (and detectron2's `PointRendSemSegHead`), the point head's inputs at every
    step are `point_sample`s of the fine features and of the *original* coarse logits at the
    chosen cell centres: the map being refined only decides where to look, so the head never
    sees its own earlier outputs nor edge-replicated borders it was not trained on.

    Args:
        coarse: logits (B, h, w, K).
        fine: fine features (B, H4, W4, C).
        size: the output (H, W), e.g. the image's.
        head: callable `[fine points (B, N, C), coarse points (B, N, K)]` → logits (B, N, K).
        steps: subdivision steps.
        points: N per step (an int or a scalar int32 tensor); None: the cells of the map
            after the first step.
        align_corners: the pixel-grid convention of every resize and point (see
            `tfdeeplab.layers.resize_like`); with it, an h-cell axis becomes 2h - 1 cells, so
            that the old cells keep their positions and one new cell falls between each pair.
        pixels: None, or the image as `pixel_features` (B, H, W, C'), sampled at full
            resolution beside the fine features (the head then reads C + C' features).

    Returns:
        Float32 logits (B, H, W, K), the refined map resized bilinearly to `size`.
    """
    coarse = tf.cast(coarse, tf.float32)
    logits = coarse
    cap = None
    for _ in range(steps):
        shape = tf.shape(logits)
        height, width = 2 * shape[1], 2 * shape[2]
        if align_corners:
            height, width = height - 1, width - 1
        logits = resize(logits, (height, width), "bilinear", align_corners)
        cells = height * width
        if cap is None:
            cap = cells if points is None else tf.convert_to_tensor(points, tf.int32)
        count = tf.minimum(cap, cells)
        step = _aligned_step if align_corners else _sampled_step
        logits = step(logits, coarse, fine, pixels, head, count)
    return resize(logits, size, "bilinear", align_corners)


def _sampled_step(logits, coarse, fine, pixels, head, count):
    """One subdivision step under half-pixel centres: the head's inputs are `point_sample`d at
    the chosen cell centres (zero beyond the maps' outer cell centres, as detectron2's)."""
    shape = tf.shape(logits)
    indices, where = most_uncertain_cells(uncertainty(logits), count)
    refined = head([*fine_points(fine, where, False, pixels), point_sample(coarse, where)])
    # Into zeros plus a mask, not tensor_scatter_nd_update: top-k's indices are distinct.
    mask = scatter_cells(indices, tf.ones_like(indices, tf.float32)[..., None], shape)
    return logits * (1 - mask) + scatter_cells(indices, tf.cast(refined, tf.float32), shape)


def _aligned_step(logits, coarse, fine, pixels, head, count):
    """One subdivision step with aligned corners, as `point_sample` at the cell centres but
    without any point maths.

    With aligned corners, the bilinear sample of a map at the centre of cell (i, j) of an
    h × w grid is cell (i, j) of the map resized (aligned) to h × w. So the fine features, the
    pixels and the coarse logits are resized to the grid and the N chosen cells' rows of each
    map and of the logits are taken by a GATHER with top-k's indices as they are; the refined
    rows go back by one SCATTER_ND of their change. In a TFLite file a step is then two TOPK_V2,
    GATHERs and one SCATTER_ND between delegated ops (was: float and int32 index maths and
    three GATHER_NDs around them, each cutting XNNPACK's graph), and every resize runs in
    XNNPACK. The maps are not concatenated before the gather: an int8 concatenation puts all
    its inputs on one scale (see `_dense_by_parts`).
    """
    shape = tf.shape(logits)
    grid = (shape[1], shape[2])
    maps = [resize(fine, grid, "bilinear", True)]
    if pixels is not None:
        maps.append(resize(pixels, grid, "bilinear", True))
    maps += [resize(coarse, grid, "bilinear", True), logits]
    scores = tf.reshape(uncertainty(logits), (shape[0], shape[1] * shape[2]))
    indices = tf.math.top_k(scores, k=count).indices
    rows = [cell_rows(m, indices, shape) for m in maps]
    refined = tf.cast(head(rows[:-1]), tf.float32)
    return logits + scatter_cells(indices, refined - rows[-1], shape)


@keras.saving.register_keras_serializable(package="tfdeeplab")
class PointRendRefiner(keras.layers.Layer):
    """Adaptive subdivision: from coarse logits, `steps` times upsample 2× bilinearly, re-predict
    the N most uncertain cells with the point head, write them back; then resize to the image.

    Args:
        num_classes: K.
        steps: subdivision steps; each halves the stride (3 takes OS 16 to stride 2).
        points: N per step; None re-predicts as many cells as the map after the first step has
            (the stride-OS/2 map), capped by the cells of each map.
        points_stride: with `points` None, N per step is instead the number of cells of the
            image's stride-`points_stride` map (4: one point per 4×4 pixels), so it follows
            the image's size.
        channels, num_layers: the point head's width and depth.

        training_points: N per image in training; None uses the cells of the coarse map.
        image_features: the point head also reads the image's pixels at each point (scaled to
            [-1, 1]), full-resolution evidence beside the stride-4 features, for structures
            thinner than a stride-4 cell.
        ignore_label: label without a point loss.
        point_loss_weight: weight of the point loss added to the dense loss.
        align_corners: the pixel-grid convention of the resizes and points (see
            `tfdeeplab.layers.resize_like`); False by default so that models saved before the
            option load unchanged; `DeepLabV3` builds with True.

    Call with `[coarse logits (B, h, w, K), fine features (B, H4, W4, C), image (B, H, W, 3)]`;
    returns logits (B, H, W, K).

    Training (paper, section 3.1) uses no subdivision: called with training=True the layer
    returns the coarse logits upsampled bilinearly, and `training_outputs` gives the point
    head's logits at points chosen by `sample_training_points`, which `PointRendDeepLab`
    returns beside the logits.
    """

    def __init__(
        self,
        num_classes,
        steps=3,
        points=None,
        channels=256,
        num_layers=3,
        training_points=None,
        points_stride=None,
        ignore_label=255,
        point_loss_weight=1.0,
        align_corners=False,
        image_features=False,
        pixel_scale=None,
        pixel_offset=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if steps < 0 or any(n is not None and n < 1 for n in (points, points_stride)):
            raise ValueError(
                f"steps={steps} must be ≥ 0, points={points} and points_stride={points_stride} "
                "≥ 1 (or None)"
            )
        self.num_classes = int(num_classes)
        self.steps = int(steps)
        self.points = None if points is None else int(points)
        self.points_stride = None if points_stride is None else int(points_stride)
        self.training_points_count = None if training_points is None else int(training_points)
        self.ignore_label = int(ignore_label)
        self.point_loss_weight = float(point_loss_weight)
        self.align_corners = bool(align_corners)
        self.image_features = bool(image_features)
        self.pixel_scale = None if pixel_scale is None else [float(v) for v in pixel_scale]
        self.pixel_offset = None if pixel_offset is None else [float(v) for v in pixel_offset]
        self.head = PointHead(num_classes, channels, num_layers, name="point_head")

    def build(self, input_shapes):
        channels = fine_channels(input_shapes, self.image_features)
        self.head.build(((None, None, channels), (None, None, self.num_classes)))

    def _pixels(self, image):
        if not self.image_features:
            return None
        return pixel_features(image, self.pixel_scale, self.pixel_offset)

    def call(self, inputs, training=None):
        coarse, fine, image = inputs
        size = tf.shape(image)[1:3]
        if training:
            return resize(tf.cast(coarse, tf.float32), size, "bilinear", self.align_corners)
        return adaptive_subdivision(
            coarse,
            fine,
            size,
            self.head,
            self.steps,
            points_per_step(size, self.points, self.points_stride),
            self.align_corners,
            self._pixels(image),
        )

    def training_outputs(self, coarse, fine, image, training=True):
        """The point head's training outputs for the layer's inputs of one training step (the
        training-head protocol of `SegmentationModel`).

        Returns:
            {"point_logits": (B, N, K) float32, the head's logits at the points;
             "points": (B, N, 2) normalised (x, y), chosen by `sample_training_points` on the
             coarse logits (N: `training_points`, or the coarse map's cells);
             "image_size": (2,) int32, the (H, W) of `image`, which the points refer to}.
        """
        count = self.training_points_count
        if count is None:
            if coarse.shape[1] is None or coarse.shape[2] is None:
                raise ValueError(
                    "PointRend training needs fixed-size crops (or training_points=N): the "
                    "coarse map's size is unknown"
                )
            count = coarse.shape[1] * coarse.shape[2]
        coarse32 = tf.cast(coarse, tf.float32)
        aligned = self.align_corners
        # Point selection sees no gradient: it only decides where to look.
        points = sample_training_points(tf.stop_gradient(coarse32), count, align_corners=aligned)
        logits = self.head(
            [
                *fine_points(fine, points, aligned, self._pixels(image)),
                point_sample(coarse32, points, aligned),
            ]
        )
        return {
            "point_logits": tf.cast(logits, tf.float32),
            "points": points,
            "image_size": tf.shape(image)[1:3],
        }

    def training_loss(self, y, outputs, loss=None):
        """`point_loss_weight` × the cross-entropy of the point logits against the labels `y`
        (B, H, W) or (B, H, W, 1) at the points, ignoring `ignore_label`."""
        labels = tf.cast(sparse_labels(y, 4), tf.int32)
        # The points refer to the refiner's image: the input padded by `AlignedPadding`, if the
        # model pads. The padding has no labels.
        extra = outputs["image_size"] - tf.shape(labels)[1:3]
        labels = tf.pad(
            labels, [[0, 0], [0, extra[0]], [0, extra[1]]], constant_values=self.ignore_label
        )
        value = point_loss(
            labels_at_points(labels, outputs["points"], self.align_corners),
            outputs["point_logits"],
            self.ignore_label,
        )
        return self.point_loss_weight * tf.cast(value, tf.float32)

    def compute_output_shape(self, input_shapes):
        image_shape = input_shapes[2]
        return (*image_shape[:3], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "steps": self.steps,
            "points": self.points,
            "points_stride": self.points_stride,
            "channels": self.head.channels,
            "num_layers": self.head.num_layers,
            "training_points": self.training_points_count,
            "ignore_label": self.ignore_label,
            "point_loss_weight": self.point_loss_weight,
            "align_corners": self.align_corners,
            "image_features": self.image_features,
            "pixel_scale": self.pixel_scale,
            "pixel_offset": self.pixel_offset,
        }
