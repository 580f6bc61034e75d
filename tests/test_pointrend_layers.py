import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import assert_litert_matches, assert_save_load_equal, images
from tfdeeplab import DeepLabV3
from tfdeeplab.layers.point_features import (
    most_uncertain_cells,
    point_sample,
    scatter_cells,
    uncertainty,
)
from tfdeeplab.layers.pointrend import (
    PointHead,
    PointRendRefiner,
    adaptive_subdivision,
    fine_points,
    pixel_features,
    points_per_step,
)
from tfdeeplab.layers.resize_like import resize


def test_point_head_concatenates_the_coarse_prediction_everywhere():
    head = PointHead(num_classes=3, channels=8, num_layers=3)
    out = head([np.zeros((2, 5, 4), "float32"), np.zeros((2, 5, 3), "float32")])
    assert out.shape == (2, 5, 3)
    c, k, ch = 4, 3, 8
    expected = (c + k) * ch + ch + 2 * ((ch + k) * ch + ch) + (ch + k) * k + k
    assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == expected
    assert PointHead.from_config(head.get_config()).get_config() == head.get_config()


def test_scatter_cells_puts_rows_at_flat_cell_indices():
    rows = tf.reshape(tf.range(1, 2 * 2 * 2 + 1, dtype=tf.float32), (2, 2, 2))
    shape = tf.constant([2, 2, 3, 7])  # the channel count comes from the rows
    result = scatter_cells(tf.constant([[5, 0], [1, 2]]), rows, shape).numpy()
    expected = np.zeros((2, 2, 3, 2), "float32")
    expected[0, 1, 2], expected[0, 0, 0] = rows[0, 0], rows[0, 1]  # cell 5 = row 1, column 2
    expected[1, 0, 1], expected[1, 0, 2] = rows[1, 0], rows[1, 1]
    np.testing.assert_array_equal(result, expected)


def test_point_head_reads_its_inputs_by_parts_as_one_concatenation():
    """The head's layers read [fine parts…, coarse] by parts (no int8 concatenation sharing one
    scale): the same values as each Dense layer applied to the concatenated input."""
    rng = np.random.default_rng(0)
    fine, pixels, coarse = (rng.normal(size=(2, 7, c)).astype("float32") for c in (5, 3, 4))
    head = PointHead(num_classes=4, channels=8, num_layers=2)
    out = head([fine, pixels, coarse]).numpy()
    x = np.concatenate([fine, pixels, coarse], axis=-1)
    for layer in head.hidden:
        x = np.concatenate([layer(x).numpy(), coarse], axis=-1)
    np.testing.assert_allclose(out, head.predictor(x).numpy(), atol=1e-5)
    assert head.hidden[0].kernel.shape == (5 + 3 + 4, 8)


def _inputs(batch=2, size=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(batch, size // 16, size // 16, classes)).astype("float32")
    fine = rng.normal(size=(batch, size // 4, size // 4, 5)).astype("float32")
    return [coarse, fine, np.zeros((batch, size, size, 3), "float32")]


def test_without_steps_the_refiner_is_bilinear_upsampling():
    coarse, fine, image = _inputs()
    out = PointRendRefiner(3, steps=0)([coarse, fine, image])
    np.testing.assert_allclose(out, tf.image.resize(coarse, (32, 32)), rtol=1e-6)


def test_refined_cells_take_the_point_head_prediction():
    coarse, fine, image = _inputs()
    refiner = PointRendRefiner(3, steps=1, points=3, channels=4)
    refiner([coarse, fine, image])
    head = refiner.head
    head.set_weights([np.zeros_like(w) for w in head.get_weights()[:-1]] + [np.array([7.0, 8, 9])])
    # One step at 2×: the 3 most uncertain cells become (7, 8, 9); the rest stay bilinear.
    upsampled = tf.image.resize(coarse, (4, 4)).numpy()
    scores = np.sort(upsampled, -1)
    ranking = np.argsort(-(scores[..., -2] - scores[..., -1]).reshape(2, -1), axis=1)[:, :3]
    expected = upsampled.reshape(2, 16, 3).copy()
    for b in range(2):
        expected[b, ranking[b]] = [7.0, 8, 9]
    expected = tf.image.resize(expected.reshape(2, 4, 4, 3), (32, 32))
    np.testing.assert_allclose(refiner([coarse, fine, image]), expected, rtol=1e-5, atol=1e-5)
    # points=None re-predicts every cell of the first (stride OS/2) map.
    everything = PointRendRefiner(3, steps=1, channels=4)
    everything([coarse, fine, image])
    everything.head.set_weights(head.get_weights())
    np.testing.assert_allclose(
        everything([coarse, fine, image]), np.broadcast_to([7.0, 8, 9], (2, 32, 32, 3)), atol=1e-5
    )
    with pytest.raises(ValueError, match="steps=-1 must be ≥ 0"):
        PointRendRefiner(3, steps=-1)


def _tiny_model():
    image = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(image)
    fine = keras.layers.AveragePooling2D(4)(features)
    coarse = keras.layers.Conv2D(3, 1)(keras.layers.AveragePooling2D(4)(fine))
    logits = PointRendRefiner(3, steps=2, channels=8)([coarse, fine, image])
    return keras.Model(image, logits)


def test_refiner_saves_and_converts_to_litert_with_builtin_ops(tmp_path):
    model = _tiny_model()
    x = images(1, 64, 64)
    assert_save_load_equal(model, x, tmp_path, atol=1e-5)
    ops = assert_litert_matches(model, x, rtol=1e-3, dynamic_size=False)
    assert {"TOPK_V2", "GATHER_ND", "SCATTER_ND", "RESIZE_BILINEAR"} <= set(ops)


def test_every_subdivision_step_feeds_the_head_the_original_coarse_logits():
    """detectron2's inference samples the head's coarse input from the coarse logits at every
    step. A head far from the coarse logits (constant 100) must not leak into later steps."""
    rng = np.random.default_rng(0)
    coarse = tf.constant(rng.normal(size=(1, 4, 4, 3)), tf.float32)
    # Fine features are the cell centres of the step-2 (16×16) map: sampled at a step-2 cell
    # centre they return that point.
    centres = (np.arange(16) + 0.5) / 16
    fine = tf.constant(np.stack(np.meshgrid(centres, centres), -1)[None], tf.float32)
    seen = []

    def head(inputs):
        seen.append(inputs)
        return tf.fill(tf.shape(inputs[1]), 100.0)

    adaptive_subdivision(coarse, fine, (32, 32), head, steps=2, points=10)
    fine_points, coarse_points = seen[1]
    assert fine_points.shape == (1, 10, 2)
    np.testing.assert_allclose(coarse_points, point_sample(coarse, fine_points), atol=1e-6)
    assert np.abs(coarse_points).max() < 10  # nothing of the head's 100s


def test_aligned_subdivision_with_a_head_that_agrees_is_one_bilinear_upsampling():
    """With aligned corners an h-cell map becomes 2h - 1 cells: the old cells keep their
    positions, and a cell's point equals its bilinear value. So a head that returns its coarse
    input changes nothing, and three steps equal one corner-aligned resize to 65."""
    coarse = tf.random.stateless_normal((2, 5, 5, 3), seed=(3, 4))
    seen = []

    def head(inputs):
        seen.append(inputs[1])
        return inputs[1]

    fine = tf.zeros((2, 17, 17, 4))
    out = adaptive_subdivision(coarse, fine, (65, 65), head, steps=3, align_corners=True)
    np.testing.assert_allclose(
        out, resize(coarse, (65, 65), "bilinear", align_corners=True), atol=1e-5
    )
    # points=None: the 9×9 map of the first step, every cell of it at every step.
    assert [int(points.shape[1]) for points in seen] == [81, 81, 81]


def _point_sampled_subdivision(coarse, fine, size, head, steps, points, pixels):
    """Aligned adaptive subdivision written with `point_sample` at the chosen cell centres:
    what the layer computed before it gathered rows of resized maps instead."""
    logits, classes = coarse, coarse.shape[-1]
    for _ in range(steps):
        height, width = 2 * logits.shape[1] - 1, 2 * logits.shape[2] - 1
        logits = resize(logits, (height, width), "bilinear", align_corners=True)
        indices, where = most_uncertain_cells(
            uncertainty(logits), min(points, height * width), align_corners=True
        )
        refined = head(
            [
                *fine_points(fine, where, True, pixels),
                point_sample(coarse, where, align_corners=True),
            ]
        )
        flat = tf.reshape(logits, (logits.shape[0], height * width, classes))
        batch = tf.broadcast_to(tf.range(flat.shape[0])[:, None], indices.shape)
        where = tf.stack([batch, indices], axis=-1)
        flat = tf.tensor_scatter_nd_update(flat, where, refined)
        logits = tf.reshape(flat, (-1, height, width, classes))
    return resize(logits, size, "bilinear", align_corners=True)


@pytest.mark.parametrize("with_pixels", [False, True])
def test_aligned_subdivision_gathers_what_point_sampling_at_the_cell_centres_gives(with_pixels):
    """With aligned corners a step gathers rows of the fine features, pixels and coarse logits
    resized to its grid (a GATHER per map, no point maths): the same head inputs and the same
    result as bilinear point samples at the chosen cells' centres."""
    rng = np.random.default_rng(0)
    coarse = tf.constant(rng.normal(size=(2, 9, 9, 5)), tf.float32)
    fine = tf.constant(rng.normal(size=(2, 17, 17, 6)), tf.float32)
    pixels = tf.constant(rng.uniform(-1, 1, size=(2, 65, 65, 3)), tf.float32)
    pixels = pixels if with_pixels else None
    head = PointHead(5, channels=32, num_layers=2)
    head.build(((None, None, 9 if with_pixels else 6), (None, None, 5)))
    got = adaptive_subdivision(coarse, fine, (65, 65), head, 3, 200, True, pixels)
    expected = _point_sampled_subdivision(coarse, fine, (65, 65), head, 3, 200, pixels)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_image_features_are_the_pixels_at_each_point():
    """With `pixels`, the head's fine input ends with the image at the point, bilinearly
    sampled at full resolution: here an image whose red value is twice its column."""
    coarse = tf.constant(np.random.default_rng(1).normal(size=(1, 4, 4, 3)), tf.float32)
    centres = (np.arange(16) + 0.5) / 16  # the step-2 cell centres, as in the test above
    fine = tf.constant(np.stack(np.meshgrid(centres, centres), -1)[None], tf.float32)
    columns = np.broadcast_to(2.0 * np.arange(32), (32, 32))
    image = np.stack([columns, np.full((32, 32), 255.0), np.zeros((32, 32))], -1)[None]
    seen = []

    def head(inputs):  # [fine, pixels, coarse]
        seen.append(inputs[:2])
        return inputs[-1]

    adaptive_subdivision(coarse, fine, (32, 32), head, 2, 10, pixels=pixel_features(image))
    for features, pixels in seen:
        x = features[0, :, 0].numpy()  # the point's normalised x, from `fine`
        red, green, blue = pixels[0].numpy().T
        np.testing.assert_allclose(red, 2 * (32 * x - 0.5) / 127.5 - 1, atol=1e-5)
        np.testing.assert_allclose(green, 1.0, atol=1e-6)
        np.testing.assert_allclose(blue, -1.0, atol=1e-6)


def test_image_features_widen_the_head_and_reach_it_in_training():
    coarse, fine, image = _inputs()
    plain = PointRendRefiner(3, steps=1, channels=4, training_points=7)
    seeing = PointRendRefiner(3, steps=1, channels=4, training_points=7, image_features=True)
    for refiner in (plain, seeing):
        refiner([coarse, fine, image])
    # Fine features (5), pixels (3) and the coarse prediction (3) enter the first layer.
    assert seeing.head.hidden[0].kernel.shape[0] == plain.head.hidden[0].kernel.shape[0] + 3 == 11
    config = seeing.get_config()
    assert config["image_features"] and config["training_points"] == 7
    assert PointRendRefiner.from_config(config).get_config() == config
    outputs = seeing.training_outputs(coarse, fine, 255 * np.ones_like(image))
    assert outputs["points"].shape == (2, 7, 2) and outputs["point_logits"].shape == (2, 7, 3)
    # The head sees the pixels: another image changes its outputs at the same points.
    tf.random.set_seed(5)
    white = seeing.training_outputs(coarse, fine, 255 * np.ones_like(image))
    tf.random.set_seed(5)
    black = seeing.training_outputs(coarse, fine, np.zeros_like(image))
    np.testing.assert_array_equal(white["points"], black["points"])
    assert np.abs(white["point_logits"] - black["point_logits"]).max() > 1e-3


@pytest.mark.parametrize(
    ("align_corners", "image_features"), [(False, False), (True, False), (True, True)]
)
def test_refiner_conventions_save_and_convert(tmp_path, align_corners, image_features):
    image = keras.Input((None, None, 3))
    fine = keras.layers.Conv2D(6, 4, strides=4, padding="same", activation="relu")(image)
    coarse = keras.layers.Conv2D(3, 4, strides=4, padding="same")(fine)
    refiner = PointRendRefiner(
        3, steps=2, channels=8, align_corners=align_corners, image_features=image_features
    )
    model = keras.Model(image, refiner([coarse, fine, image]))
    x = images(1, 65, 65)
    assert_save_load_equal(model, x, tmp_path, atol=1e-5)
    assert_litert_matches(model, x, rtol=1e-3, dynamic_size=False)


def test_points_per_step_follow_the_image_size():
    assert points_per_step((193, 193), 100, 4) == 100  # an explicit count wins
    assert points_per_step((193, 193)) is None
    assert int(points_per_step(tf.constant([193, 193]), None, 4)) == 49 * 49
    assert int(points_per_step((64, 47), None, 4)) == 16 * 12


def test_refiner_with_points_stride_refines_one_point_per_stride_cells():
    coarse, fine, image = _inputs(batch=1, size=64)
    refiner = PointRendRefiner(3, steps=2, channels=4, points_stride=4)
    refiner([coarse, fine, image])
    seen = []
    call = refiner.head.call
    refiner.head.call = lambda inputs: seen.append(inputs[0].shape[1]) or call(inputs)
    refiner([coarse, fine, image])
    # 64 px at stride 4: 16·16 = 256 points per step, capped by the 8×8 map of step 1.
    assert seen == [64, 256]
    assert PointRendRefiner.from_config(refiner.get_config()).points_stride == 4
    with pytest.raises(ValueError, match="points_stride=0"):
        PointRendRefiner(3, points_stride=0)


def test_deeplabv3_refines_down_to_the_pixels_with_the_image_by_default():
    model = DeepLabV3(3, "mobilenetv2", alpha=0.35, aspp_filters=8, pointrend=True)
    refiner = model.get_layer("pointrend")
    assert (refiner.steps, refiner.points, refiner.points_stride) == (4, None, 4)
    assert refiner.image_features
    explicit = DeepLabV3(3, "mobilenetv2", alpha=0.35, aspp_filters=8, pointrend=True,
                         pointrend_points=100, pointrend_image_features=False,
                         output_stride=8)  # fmt: skip
    refiner = explicit.get_layer("pointrend")
    assert (refiner.steps, refiner.points, refiner.points_stride) == (3, 100, None)
    assert not refiner.image_features
