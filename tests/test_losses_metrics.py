import keras
import numpy as np
import pytest

from tfdeeplab.inference import predict_probabilities
from tfdeeplab.losses import SegmentationLoss, class_weights_from_frequencies
from tfdeeplab.metrics import (
    PixelAccuracy,
    boundary_counts,
    confusion_matrix,
    format_report,
    mean_iou,
    segmentation_report,
)

LABELS = np.array([[[0, 1], [2, 255]]])  # one ignored pixel
LOGITS = np.array([[[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]], [[0.0, 0.0, 1.0], [9.0, -9.0, 0.0]]]])


def test_cross_entropy_matches_keras_and_ignores_the_ignore_label():
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    loss = SegmentationLoss(3)
    np.testing.assert_allclose(loss(LABELS, LOGITS), expected(LABELS, LOGITS), rtol=1e-6)
    changed = LOGITS.copy()
    changed[0, 1, 1] = [-50.0, 50.0, 7.0]  # the ignored pixel's logits do not matter
    np.testing.assert_allclose(loss(LABELS, changed), loss(LABELS, LOGITS), rtol=1e-6)


def test_class_weights_focal_and_dice_terms():
    log_p = LOGITS - np.log(np.exp(LOGITS).sum(-1, keepdims=True))
    per_pixel = -np.array([log_p[0, 0, 0, 0], log_p[0, 0, 1, 1], log_p[0, 1, 0, 2]])
    weights = np.array([1.0, 2.0, 0.5])
    weighted = SegmentationLoss(3, class_weights=weights)(LABELS, LOGITS)
    np.testing.assert_allclose(weighted, np.sum(per_pixel * weights) / 3, rtol=1e-5)
    p_true = np.exp(-per_pixel)
    focal = SegmentationLoss(3, focal_gamma=2.0)(LABELS, LOGITS)
    np.testing.assert_allclose(focal, np.mean(per_pixel * (1 - p_true) ** 2), rtol=1e-5)
    perfect = np.eye(3)[[[0, 1], [2, 0]]][None] * 50.0
    with_dice = SegmentationLoss(3, dice_weight=1.0)(LABELS, perfect)
    assert float(with_dice) < 1e-3
    with pytest.raises(ValueError, match="class_weights has 2 entries; expected num_classes=3"):
        SegmentationLoss(3, class_weights=[1, 2])


def test_median_frequency_class_weights():
    weights = class_weights_from_frequencies([600, 300, 100, 0])
    np.testing.assert_allclose(weights, [0.5, 1.0, 3.0, 0.0], rtol=1e-6)


def test_keras_metrics_ignore_the_ignore_label():
    iou = mean_iou(3)
    accuracy = PixelAccuracy(3)
    for metric in (iou, accuracy):
        metric.update_state(LABELS, LOGITS)
    # predictions: 0, 2, 2 (ignored pixel left out): class 0 IoU 1, class 1 IoU 0, class 2 1/2.
    np.testing.assert_allclose(iou.result(), (1 + 0 + 0.5) / 3, rtol=1e-6)
    np.testing.assert_allclose(accuracy.result(), 2 / 3, rtol=1e-6)


def test_boundary_counts_on_a_hand_drawn_square():
    labels = np.zeros((1, 8, 8), int)
    labels[0, 2:6, 2:6] = 1
    predictions = labels.copy()
    predictions[0, 2:6, 2:7] = 1  # one column too wide
    # Class 1: the true 4×4 square has a 12-pixel outline, the predicted 4×5 box 14; exactly
    # 10 of those coincide. Class 0: the ring around each, 20 true and 22 predicted pixels.
    np.testing.assert_array_equal(
        boundary_counts(labels, predictions, 2, tolerance=0),
        [[16, 22, 16, 20], [10, 14, 10, 12]],
    )
    np.testing.assert_array_equal(
        boundary_counts(labels, predictions, 2, tolerance=1),
        [[22, 22, 20, 20], [14, 14, 12, 12]],
    )
    ignored = labels.copy()
    ignored[0, :, 6:] = 255  # edges next to ignored pixels are not edges
    assert boundary_counts(ignored, predictions, 2, tolerance=0)[1, 3] == 10


def test_report_from_counts():
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    predictions = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])
    confusion = confusion_matrix(labels, predictions, 2)
    np.testing.assert_array_equal(confusion, [[3, 1], [1, 2]])
    report = segmentation_report(confusion, np.array([[1, 2, 1, 1], [0, 0, 0, 0]]), ["a", "b"])
    a, b = report["classes"]
    assert a["iou"] == pytest.approx(3 / 5) and b["iou"] == pytest.approx(2 / 4)
    assert a["precision"] == pytest.approx(3 / 4) and a["recall"] == pytest.approx(3 / 4)
    assert a["boundary_f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert b["boundary_f1"] is None  # no edges of class b at all
    assert report["mean_iou"] == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert report["pixel_accuracy"] == pytest.approx(5 / 7)
    assert "mIoU 55.0" in format_report(report)


def test_miou_counts_classes_predicted_but_absent_as_keras_does():
    labels = np.array([[[0, 0, 1, 1], [0, 0, 1, 255]]])
    predictions = np.array([[[0, 2, 1, 1], [0, 0, 1, 1]]])  # class 2 predicted, never labelled
    confusion = confusion_matrix(labels, predictions, 4)  # class 3: in neither: left out
    report = segmentation_report(confusion, np.zeros((4, 4), np.int64), list("abcd"))
    expected = (3 / 4 + 3 / 3 + 0) / 3
    assert report["mean_iou"] == pytest.approx(expected)
    assert report["classes"][2]["iou"] == 0 and report["classes"][3]["iou"] is None
    keras_iou = mean_iou(4)
    keras_iou.update_state(labels, np.eye(4)[predictions])
    assert float(keras_iou.result()) == pytest.approx(expected)
    assert "union" in report["mean_iou_definition"]


def test_flip_is_undone():
    """With flip on, the prediction of a mirrored image is the mirrored prediction; a flip that
    was not undone breaks this for a model that is not mirror-symmetric."""
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer="random_normal")
    model = keras.Model(inputs, conv(inputs))
    image = np.random.default_rng(1).uniform(0, 255, (1, 9, 13, 3)).astype("float32")
    mirrored = image[:, :, ::-1]
    flipped = predict_probabilities(model, mirrored, flip=True)
    np.testing.assert_allclose(
        flipped, predict_probabilities(model, image, flip=True)[:, :, ::-1], rtol=1e-5, atol=1e-6
    )
    expected = (
        keras.ops.softmax(model(image), -1) + keras.ops.softmax(model(mirrored), -1)[:, :, ::-1]
    ) / 2
    np.testing.assert_allclose(
        predict_probabilities(model, image, flip=True), expected, rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(predict_probabilities(model, image), expected, atol=1e-3)


def test_multi_scale_flip_probabilities():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    images = np.random.default_rng(0).uniform(0, 255, (2, 17, 23, 3)).astype("float32")
    probabilities = predict_probabilities(model, images, scales=(0.5, 1.0, 1.5), flip=True)
    assert probabilities.shape == (2, 17, 23, 4)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    single = predict_probabilities(model, images)
    expected = keras.ops.softmax(model(images), axis=-1)
    np.testing.assert_allclose(single, expected, rtol=1e-5, atol=1e-6)
