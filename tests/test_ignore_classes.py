"""`ignore_classes` (arcgis.learn's option): pixels of those classes count in no loss and no
metric, and the means leave those classes out."""

import numpy as np
import pytest

from tfdeeplab.cli import build_parser
from tfdeeplab.config import TrainConfig
from tfdeeplab.data import load_segmentation_folder, synthetic_scenes
from tfdeeplab.data.pipeline import check_ignore_classes
from tfdeeplab.metrics import confusion_matrix, mean_iou, segmentation_report
from tfdeeplab.options import values


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return synthetic_scenes(tmp_path_factory.mktemp("scenes"), 4, 32, 4, seed=5)


def _masks(scenes, **kwargs):
    dataset = load_segmentation_folder(scenes, (32, 32), 4, augment=False, shuffle=False, **kwargs)
    return next(iter(dataset))[1].numpy()


def test_pipeline_turns_ignored_classes_into_the_ignore_label(scenes):
    plain = _masks(scenes)
    ignored = _masks(scenes, ignore_classes=(2, 0))
    assert {0, 2} <= set(np.unique(plain))
    np.testing.assert_array_equal(ignored, np.where(np.isin(plain, [0, 2]), 255, plain))


@pytest.mark.parametrize(
    "classes, message",
    [((7,), "ignore_classes: 7 is not a class of this data \\(0..3"), ((0, 1, 2, 3), "no class")],
)
def test_bad_ignore_classes_are_named(classes, message):
    with pytest.raises(ValueError, match=message):
        check_ignore_classes(classes, 4, 255)


def test_means_leave_ignored_classes_out():
    # Class 0 ignored (its pixel is the ignore label); the model predicts class 0 once anyway.
    labels = np.array([[[255, 1, 1, 2]]])
    predictions = np.array([[[0, 1, 0, 2]]])
    keras_iou = mean_iou(3, ignore_classes=(0,))
    keras_iou.update_state(labels, np.eye(3)[predictions])
    # Class 1: 1 of 2 labelled pixels, no false positives: 1/2. Class 2: 1. Class 0 not averaged.
    assert float(keras_iou.result()) == pytest.approx((0.5 + 1) / 2)
    confusion = confusion_matrix(labels, predictions, 3)
    report = segmentation_report(confusion, np.zeros((3, 4), np.int64), list("abc"), (0,))
    assert report["mean_iou"] == pytest.approx(0.75)
    assert report["classes"][0]["ignored"] is True and "ignored" not in report["classes"][1]
    assert segmentation_report(confusion, np.zeros((3, 4), np.int64), list("abc"))[
        "mean_iou"
    ] == pytest.approx((0 + 0.5 + 1) / 3)


def test_train_and_evaluate_take_the_option():
    args = build_parser().parse_args(
        ["train", "--data", "d", "--out", "o", "--ignore-classes", "0,5"]
    )
    assert TrainConfig(**values(TrainConfig, args)).ignore_classes == (0, 5)
    args = build_parser().parse_args(
        ["evaluate", "--model", "m", "--data", "d", "--ignore-classes", "3"]
    )
    assert args.ignore_classes == (3,)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "d", "--out", "o", "--ignore-classes", "x"])
