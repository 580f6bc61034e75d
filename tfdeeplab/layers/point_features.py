"""PointRend's point maths as pure functions (Kirillov et al., arXiv:1912.08193, section 3).

Shape legend: B batch, H height, W width, C channels (or classes), N points.

Points are normalised (x, y) in [0, 1], under one of the two pixel-grid conventions of
`tfdeeplab.layers.resize_like` (the same one as the model's resizes):
- align_corners=False: column j of a W-wide map has its centre at x = (j + 0.5) / W (likewise
  rows), the convention of detectron2's `point_sample` (`grid_sample` with align_corners=False);
- align_corners=True: column j sits at x = j / (W - 1), so x = 0 and 1 are the centres of the
  first and last cells of every map (DeepLab's convention for s·k + 1 inputs).

Every function uses only ops with TFLite builtins (GATHER_ND, TOPK_V2, FLOOR, ...), so models
built on them convert without Flex ops.
"""

import tensorflow as tf


def cell_coordinates(points, height, width, align_corners=False):
    """Continuous (x, y) cell coordinates, whose integers are cell centres, of normalised
    `points` (..., 2) on an H×W map."""
    points = tf.cast(points, tf.float32)
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    if align_corners:
        return points[..., 0] * (width - 1), points[..., 1] * (height - 1)
    return points[..., 0] * width - 0.5, points[..., 1] * height - 0.5


def point_sample(features, points, align_corners=False):
    """Bilinear samples of `features` (B, H, W, C) at `points` (B, N, 2); zero outside the map.

    The four corners of every point are fetched by one GATHER_ND of 4N rows, not four: each
    gather is an op XNNPACK does not take, so in a TFLite file every gather between delegated
    ops cuts the graph into another delegate partition.

    Returns:
        (B, N, C), in the dtype of `features`.
    """
    shape = tf.shape(features)
    height, width = shape[1], shape[2]
    channels = features.shape[-1] if features.shape[-1] is not None else shape[3]
    x, y = cell_coordinates(points, height, width, align_corners)
    x0, y0 = tf.floor(x), tf.floor(y)
    wx1, wy1 = x - x0, y - y0
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    indices, weights = [], []
    for dy, wy in ((0, 1.0 - wy1), (1, wy1)):
        for dx, wx in ((0, 1.0 - wx1), (1, wx1)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            indices.append(
                tf.stack(
                    [tf.clip_by_value(yi, 0, height - 1), tf.clip_by_value(xi, 0, width - 1)], -1
                )
            )
            weights.append(wx * wy * tf.cast(inside, tf.float32))
    corners = tf.gather_nd(features, tf.concat(indices, axis=1), batch_dims=1)  # (B, 4N, C)
    count = tf.shape(points)[1]
    corners = tf.reshape(corners, tf.stack([shape[0], 4, count, channels]))
    weight = tf.reshape(tf.concat(weights, axis=1), tf.stack([shape[0], 4, count, 1]))
    return tf.reduce_sum(corners * tf.cast(weight, features.dtype), axis=1)


def uncertainty(logits):
    """The negated gap between the two largest class logits, (..., C) → (...); the largest
    value (0) is the most uncertain."""
    top2 = tf.math.top_k(logits, k=2).values
    return top2[..., 1] - top2[..., 0]


def sample_training_points(
    coarse_logits, num_points, oversample=3, importance=0.75, seed=None, align_corners=False
):
    """Training points: the most uncertain of `oversample`·N random points plus random ones.

    Paper, section 3.1: draw k·N uniform points, keep the β·N whose *interpolated* coarse
    prediction is most uncertain, and fill the other (1 - β)·N uniformly. Uncertainty is computed
    after sampling (not on the coarse grid) so that it is that of the prediction at the point,
    which is what the point head corrects.

    Args:
        coarse_logits: (B, h, w, C).
        num_points: N.
        oversample: k ≥ 1.
        importance: β in [0, 1].

    Returns:
        (B, N, 2) normalised (x, y) points.
    """
    if oversample < 1 or not 0 <= importance <= 1:
        raise ValueError(
            f"oversample={oversample} must be ≥ 1 and importance={importance} in [0, 1]"
        )
    batch = tf.shape(coarse_logits)[0]
    sampled = int(oversample * num_points)
    important = int(importance * num_points)
    candidates = tf.random.uniform((batch, sampled, 2), seed=seed)
    scores = uncertainty(point_sample(coarse_logits, candidates, align_corners))
    chosen = tf.math.top_k(scores, k=important).indices
    points = tf.gather(candidates, chosen, batch_dims=1)
    random = tf.random.uniform((batch, num_points - important, 2), seed=seed)
    return tf.concat([points, random], axis=1)


def most_uncertain_cells(uncertainty_map, num_points, align_corners=False):
    """Inference points: the N most uncertain cells of a (B, H, W) map (paper, section 3.1).

    Returns:
        indices (B, N) int32 flat cell indices (row · W + column), and their centres (B, N, 2)
        as normalised (x, y).
    """
    shape = tf.shape(uncertainty_map)
    height, width = shape[1], shape[2]
    flat = tf.reshape(uncertainty_map, (shape[0], height * width))
    indices = tf.math.top_k(flat, k=num_points).indices
    rows, columns = indices // width, indices % width
    return indices, tf.stack(
        [_cell_centre(columns, width, align_corners), _cell_centre(rows, height, align_corners)],
        axis=-1,
    )


def _cell_centre(index, size, align_corners):
    """The normalised coordinate of cell `index` of a `size`-cell axis (0 on a 1-cell axis
    with aligned corners)."""
    index, size = tf.cast(index, tf.float32), tf.cast(size, tf.float32)
    if align_corners:
        return index / tf.maximum(size - 1, 1)
    return (index + 0.5) / size


def labels_at_points(labels, points, align_corners=False):
    """Nearest-neighbour labels (B, N) of a (B, H, W) mask at normalised points (B, N, 2)."""
    shape = tf.shape(labels)
    x, y = cell_coordinates(points, shape[1], shape[2], align_corners)
    # The nearest pixel centre (x = 0.5 is halfway, rounded up).
    column = tf.clip_by_value(tf.cast(tf.floor(x + 0.5), tf.int32), 0, shape[2] - 1)
    row = tf.clip_by_value(tf.cast(tf.floor(y + 0.5), tf.int32), 0, shape[1] - 1)
    return tf.gather_nd(labels, tf.stack([row, column], axis=-1), batch_dims=1)


def cell_rows(grid_map, indices, shape):
    """Rows at the flat cell indices (B, N) of a (B, H, W, C) map on the `shape` grid, as
    (B, N, C): one GATHER of the flattened map (the inverse of `scatter_cells`)."""
    flat = tf.reshape(grid_map, (shape[0], shape[1] * shape[2], grid_map.shape[-1]))
    return tf.gather(flat, indices, batch_dims=1)


def scatter_cells(indices, rows, shape):
    """A (B, H, W, K) map of zeros with `rows` (B, N, K) at the flat cell indices (B, N)
    (row · W + column, distinct per image) of an H × W grid; `shape` is (B, H, W, any).

    One SCATTER_ND (a TFLite builtin) into the flattened grid, reshaped back: callers add or
    blend it with their 4-D map, which itself is never reshaped. (A float map reshaped after an
    int8 resize read its quantisation from calibration on one side and from the resize on the
    other; at 1 ulp apart the converter refused it as a broken same-scale RESHAPE.)
    """
    batch = tf.broadcast_to(tf.range(shape[0])[:, None], tf.shape(indices))
    channels = tf.shape(rows, out_type=tf.int32)[-1]
    flat = tf.stack([shape[0], shape[1] * shape[2], channels])
    cells = tf.scatter_nd(tf.stack([batch, indices], axis=-1), rows, flat)
    return tf.reshape(cells, tf.stack([shape[0], shape[1], shape[2], channels]))
