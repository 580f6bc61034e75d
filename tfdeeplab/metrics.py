"""Segmentation metrics: Keras metrics for `model.fit`, and the evaluation report's maths.

Shapes: B batch, H height, W width, C classes. Labels equal to the ignore label count nowhere.
"""

import keras
import numpy as np
import tensorflow as tf


def mean_iou(num_classes, ignore_label=255, name="mean_iou", ignore_classes=()):
    """Keras' own MeanIoU on logits (argmax inside), ignoring `ignore_label`. With
    `ignore_classes` (whose labels the data pipeline has turned into `ignore_label`), Keras'
    IoU averaged over the other classes."""
    settings = {"name": name, "ignore_class": ignore_label, "sparse_y_pred": False}
    if not ignore_classes:
        return keras.metrics.MeanIoU(num_classes, **settings)
    kept = [c for c in range(num_classes) if c not in set(ignore_classes)]
    return keras.metrics.IoU(num_classes, kept, **settings)


@keras.saving.register_keras_serializable(package="tfdeeplab")
class PixelAccuracy(keras.metrics.MeanIoU):
    """Share of non-ignored pixels whose argmax is right: trace / sum of Keras' confusion matrix."""

    def __init__(self, num_classes, ignore_label=255, name="pixel_accuracy", **kwargs):
        # Configs saved before this class had its own name for it carry Keras' `ignore_class`.
        ignore_label = kwargs.pop("ignore_class", ignore_label)
        kwargs.setdefault("sparse_y_pred", False)
        super().__init__(num_classes, name=name, ignore_class=ignore_label, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["ignore_label"] = config.pop("ignore_class")
        return config

    def result(self):
        total = tf.reduce_sum(self.total_cm)
        return tf.math.divide_no_nan(tf.linalg.trace(self.total_cm), total)


def confusion_matrix(labels, predictions, num_classes, ignore_label=255):
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    labels = np.asarray(labels).ravel().astype(np.int64)
    predictions = np.asarray(predictions).ravel().astype(np.int64)
    keep = labels != ignore_label
    index = labels[keep] * num_classes + predictions[keep]
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def _boundaries(one_hot, valid):
    """Pixels of each class with a valid 8-neighbour of another class: (B, H, W, C) float."""
    others = valid * (1.0 - one_hot)
    near_other = tf.nn.max_pool2d(others, 3, 1, "SAME")
    return one_hot * valid * near_other


def boundary_counts(labels, predictions, num_classes, ignore_label=255, tolerance=2):
    """Counts for the boundary F-score (Csurka et al., BMVC 2013) with a `tolerance` px band.

    A predicted boundary pixel is correct when a true boundary pixel of its class lies within
    `tolerance` pixels (Chebyshev distance), and vice versa for recall; the band around the true
    edges is the trimap of the DeepLab evaluations.

    Args:
        labels: (B, H, W) int true classes; predictions: (B, H, W) int predicted classes.

    Returns:
        (C, 4) int64: [matched predicted, predicted, matched true, true] boundary pixels.
    """
    labels = tf.convert_to_tensor(labels, tf.int32)
    valid = tf.cast(labels != ignore_label, tf.float32)[..., None]
    true = tf.one_hot(tf.where(labels == ignore_label, 0, labels), num_classes)
    pred = tf.one_hot(tf.convert_to_tensor(predictions, tf.int32), num_classes)
    true_edges, pred_edges = _boundaries(true, valid), _boundaries(pred, valid)
    window = 2 * tolerance + 1
    near_true = tf.nn.max_pool2d(true_edges, window, 1, "SAME")
    near_pred = tf.nn.max_pool2d(pred_edges, window, 1, "SAME")
    counts = [
        tf.reduce_sum(pred_edges * near_true, axis=(0, 1, 2)),
        tf.reduce_sum(pred_edges, axis=(0, 1, 2)),
        tf.reduce_sum(true_edges * near_pred, axis=(0, 1, 2)),
        tf.reduce_sum(true_edges, axis=(0, 1, 2)),
    ]
    return np.stack([c.numpy() for c in counts], axis=-1).astype(np.int64)


def _ratio(numerator, denominator):
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    return np.divide(
        numerator, denominator, out=np.full_like(numerator, np.nan), where=denominator > 0
    )


def segmentation_report(confusion, boundaries, class_names, ignore_classes=()):
    """Per-class and mean scores from accumulated counts.

    Args:
        confusion: (C, C) confusion matrix; boundaries: (C, 4) from `boundary_counts`.
        class_names: C names.
        ignore_classes: classes left out of the means (their rows say "ignored": true).

    Returns:
        A JSON-ready dict: "classes" (per class: iou, precision, recall, f1, boundary_f1,
        pixels), "mean_iou", "pixel_accuracy", "mean_boundary_f1", "mean_iou_definition".
        mIoU is the standard one (Keras' `MeanIoU`, mmsegmentation, the PASCAL VOC devkit): the
        mean IoU over classes whose union of labelled and predicted pixels is non-empty, so a
        class predicted but absent from the labels counts with IoU 0. Mean boundary F1 is over
        classes with true edges. A class absent from both labels and predictions has None.
    """
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    iou = _ratio(true_positive, support + predicted - true_positive)
    precision = _ratio(true_positive, predicted)
    recall = _ratio(true_positive, support)
    f1 = _ratio(2 * true_positive, support + predicted)
    b_precision = _ratio(boundaries[:, 0], boundaries[:, 1])
    b_recall = _ratio(boundaries[:, 2], boundaries[:, 3])
    b_precision = np.where(np.isnan(b_precision) & (boundaries[:, 3] > 0), 0.0, b_precision)
    b_recall = np.where(np.isnan(b_recall) & (boundaries[:, 1] > 0), 0.0, b_recall)
    boundary_f1 = _ratio(2 * b_precision * b_recall, b_precision + b_recall)
    boundary_f1 = np.where((b_precision == 0) & (b_recall == 0), 0.0, boundary_f1)
    counted = ~np.isin(np.arange(len(support)), list(ignore_classes))
    present = (support > 0) & counted
    in_union = (support + predicted - true_positive > 0) & counted
    has_edges = present & (boundaries[:, 3] > 0)

    def clean(value):
        return None if np.isnan(value) else float(value)

    return {
        "classes": [
            {
                "name": name,
                "iou": clean(iou[i]),
                "precision": clean(precision[i]),
                "recall": clean(recall[i]),
                "f1": clean(f1[i]),
                "boundary_f1": clean(boundary_f1[i]),
                "pixels": int(support[i]),
                **({"ignored": True} if not counted[i] else {}),
            }
            for i, name in enumerate(class_names)
        ],
        "mean_iou": clean(np.mean(iou[in_union])) if in_union.any() else None,
        "mean_iou_definition": MEAN_IOU_DEFINITION,
        "pixel_accuracy": clean(true_positive.sum() / max(confusion.sum(), 1)),
        "mean_boundary_f1": clean(np.mean(np.nan_to_num(boundary_f1[has_edges])))
        if has_edges.any()
        else None,
    }


MEAN_IOU_DEFINITION = "mean over classes with a non-empty union of labels and predictions"


def format_report(report):
    """The report as a fixed-width table (one row per class, then the means)."""
    lines = [
        f"{'class':<16}{'IoU':>8}{'prec':>8}{'recall':>8}{'F1':>8}{'bound F':>9}{'pixels':>11}"
    ]

    def cell(value, width=8):
        return f"{'—':>{width}}" if value is None else f"{100 * value:>{width}.1f}"

    for row in report["classes"]:
        lines.append(
            f"{row['name'][:15]:<16}{cell(row['iou'])}{cell(row['precision'])}"
            f"{cell(row['recall'])}{cell(row['f1'])}{cell(row['boundary_f1'], 9)}"
            f"{row['pixels']:>11}"
        )
    lines.append(
        f"mIoU {cell(report['mean_iou'], 0).strip()}   pixel accuracy "
        f"{cell(report['pixel_accuracy'], 0).strip()}   mean boundary F1 "
        f"{cell(report['mean_boundary_f1'], 0).strip()}   (percent)"
    )
    return "\n".join(lines)
