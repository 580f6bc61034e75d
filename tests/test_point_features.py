import numpy as np
import pytest
import tensorflow as tf

from tfdeeplab.layers.point_features import (
    labels_at_points,
    most_uncertain_cells,
    point_sample,
    sample_training_points,
    uncertainty,
)
from tfdeeplab.layers.resize_like import resize

# A 3×4 map whose single channel is 10·row + column.
GRID = (10 * np.arange(3)[:, None] + np.arange(4)[None, :]).astype("float32")[None, ..., None]


def sample(points):
    return point_sample(tf.constant(GRID), tf.constant([points], tf.float32)).numpy()[0, :, 0]


def test_point_sample_hits_pixel_centres_exactly():
    # Centre of column j is (j + 0.5) / 4, of row i is (i + 0.5) / 3.
    centres = [((j + 0.5) / 4, (i + 0.5) / 3) for i in range(3) for j in range(4)]
    np.testing.assert_allclose(sample(centres), GRID.ravel(), atol=1e-5)


def test_point_sample_interpolates_between_centres():
    # Halfway between columns 1 and 2 of row 1: (11 + 12) / 2; between rows 0 and 1 at column 3:
    # (3 + 13) / 2; and the middle of four centres.
    points = [(2 / 4, 1.5 / 3), (3.5 / 4, 1 / 3), (2 / 4, 1 / 3)]
    np.testing.assert_allclose(sample(points), [11.5, 8.0, (1 + 2 + 11 + 12) / 4], atol=1e-5)


def test_point_sample_is_zero_outside_the_map():
    # x = 0 lies half a pixel left of column 0's centre: half the weight falls outside (zero).
    # The corner (1, 1) keeps a quarter of the last pixel; points beyond the map are 0.
    points = [(0.0, 1.5 / 3), (1.0, 1.0), (0.0, 0.0), (1.5, 0.5), (-0.5, 0.5)]
    np.testing.assert_allclose(sample(points), [0.5 * 10, 0.25 * 23, 0.25 * 0, 0, 0], atol=1e-5)


def test_uncertainty_is_the_negated_top_two_gap():
    logits = tf.constant([[3.0, 1.0, 2.5], [0.0, 5.0, -1.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(uncertainty(logits), [-0.5, -5.0, 0.0])


def test_inference_selection_takes_the_most_uncertain_cells():
    scores = -np.arange(12, dtype="float32").reshape(1, 3, 4)
    scores[0, 2, 1] = 5.0  # most uncertain
    scores[0, 0, 3] = 4.0
    indices, points = most_uncertain_cells(tf.constant(scores), 3)
    np.testing.assert_array_equal(indices, [[9, 3, 0]])
    np.testing.assert_allclose(
        points, [[[1.5 / 4, 2.5 / 3], [3.5 / 4, 0.5 / 3], [0.5 / 4, 0.5 / 3]]]
    )


def test_training_points_favour_uncertain_regions():
    # Two classes; the prediction is uncertain (tied) in the right half of the map. About half
    # of the 3·64 candidates fall there, more than the 48 kept, so all kept ones should.
    logits = np.zeros((2, 8, 8, 2), "float32")
    logits[:, :, :4, 0] = 10.0
    tf.random.set_seed(0)
    points = sample_training_points(tf.constant(logits), 64, oversample=3, importance=0.75)
    assert points.shape == (2, 64, 2)
    assert np.all((points >= 0) & (points <= 1))
    important, rest = points[:, :48, 0].numpy(), points[:, 48:, 0].numpy()
    # Kept points lie where the interpolated prediction is tied or nearly (x > 3.5 / 8).
    assert np.mean(important > 3.5 / 8) > 0.95
    assert 0.2 < np.mean(rest > 4 / 8) < 0.8  # the rest are uniform
    with pytest.raises(ValueError, match=r"importance=1\.5"):
        sample_training_points(tf.constant(logits), 8, importance=1.5)


def test_aligned_corners_put_points_zero_and_one_on_the_first_and_last_cells():
    # Column j of 4 sits at x = j / 3, row i of 3 at y = i / 2; between them, bilinear.
    centres = [(j / 3, i / 2) for i in range(3) for j in range(4)]
    points = tf.constant([centres + [(0.5, 0.25)]], tf.float32)
    sampled = point_sample(tf.constant(GRID), points, align_corners=True).numpy()[0, :, 0]
    np.testing.assert_allclose(sampled, [*GRID.ravel(), (1.5 + 11.5) / 2], atol=1e-5)
    indices, cells = most_uncertain_cells(tf.constant(GRID[..., 0]), 12, align_corners=True)
    np.testing.assert_allclose(
        point_sample(tf.constant(GRID), cells, align_corners=True)[0, :, 0],
        GRID.ravel()[indices[0].numpy()],
        atol=1e-5,
    )


@pytest.mark.parametrize("align_corners", [False, True])
def test_point_sample_agrees_with_the_same_conventions_resize(align_corners):
    # PointRend's points and the logits' upsampling must put a coarse cell on the same pixel.
    coarse = tf.random.stateless_normal((1, 5, 5, 3), seed=(1, 2))
    size = 65
    resized = resize(coarse, (size, size), "bilinear", align_corners).numpy()[0]
    pixels = np.arange(size)
    # half-pixel: point_sample is zero beyond the outer cell centres, resize replicates them.
    inside = pixels if align_corners else pixels[7:-7]
    axis = inside / (size - 1) if align_corners else (inside + 0.5) / size
    xs, ys = np.meshgrid(axis, axis)
    points = tf.constant(np.stack([xs, ys], -1).reshape(1, -1, 2), tf.float32)
    sampled = point_sample(coarse, points, align_corners).numpy().reshape(len(axis), len(axis), 3)
    np.testing.assert_allclose(sampled, resized[np.ix_(inside, inside)], atol=1e-5)
    labels = tf.constant(np.arange(size * size).reshape(1, size, size))
    expected = (inside[:, None] * size + inside[None, :]).ravel()
    np.testing.assert_array_equal(labels_at_points(labels, points, align_corners)[0], expected)


def test_point_sample_is_one_gather_in_tflite():
    """Four corner gathers would be four ops XNNPACK does not take; one GATHER_ND fetches
    all 4N corner rows (same values: the interpolation tests above)."""
    from converters.litert import LiteRTModel

    features = tf.TensorSpec((1, 9, 11, 3), tf.float32)
    points = tf.TensorSpec((1, 5, 2), tf.float32)
    function = tf.function(point_sample, input_signature=[features, points])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    ops = LiteRTModel(converter.convert()).op_names
    assert ops.count("GATHER_ND") == 1
