"""Inference helpers: multi-scale and flipped prediction, and dataset evaluation.

Shapes: B batch, H height, W width, C classes.
"""

import numpy as np
import tensorflow as tf

from tfdeeplab.layers.pointrend import PointRendRefiner
from tfdeeplab.layers.resize_like import IMAGENET_MEAN_RGB, ResizeLike, resize
from tfdeeplab.metrics import boundary_counts, confusion_matrix, segmentation_report


def predict_probabilities(model, images, scales=(1.0,), flip=False):
    """Class probabilities (B, H, W, C) averaged over input scales and horizontal flips.

    DeepLabV3 (section 4.1) evaluates at scales {0.5, 0.75, 1, 1.25, 1.5, 1.75} with flips;
    every view's logits are resized back to (H, W) before the softmax is averaged. Views are
    resized under the model's pixel-grid convention (`model_align_corners`); with aligned
    corners a scale s takes H to round((H - 1)·s) + 1.

    Args:
        model: a segmentation model returning logits at its input resolution.
        images: (B, H, W, 3) float RGB in [0, 255].
        scales: input scale factors.
        flip: also average the prediction of the mirrored image.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    size = tf.shape(images)[1:3]
    aligned = model_align_corners(model)
    corner = 1 if aligned else 0
    total = None
    for scale in scales:
        span = tf.cast(size - corner, tf.float32) * scale
        scaled_size = tf.maximum(tf.cast(tf.round(span), tf.int32) + corner, 1)
        scaled = images if scale == 1 else resize(images, scaled_size, "bilinear", aligned)
        views = [(scaled, False)] + ([(tf.reverse(scaled, [2]), True)] if flip else [])
        for view, mirrored in views:
            logits = tf.cast(model(view, training=False), tf.float32)
            if mirrored:
                logits = tf.reverse(logits, [2])
            probabilities = tf.nn.softmax(resize(logits, size, "bilinear", aligned), axis=-1)
            total = probabilities if total is None else total + probabilities
    return (total / (len(scales) * (2 if flip else 1))).numpy()


def model_align_corners(model):
    """The pixel-grid convention of a tfdeeplab model's upsampling (its `ResizeLike` or
    `PointRendRefiner`); False (half-pixel) for other models."""
    for layer in model.layers:
        if isinstance(layer, ResizeLike | PointRendRefiner):
            return layer.align_corners
    return False


def evaluate(
    model,
    dataset,
    num_classes,
    class_names,
    ignore_label=255,
    scales=(1.0,),
    flip=False,
    tolerance=2,
    progress=None,
    ignore_classes=(),
):
    """Evaluates `model` on a dataset of (images, masks) batches; `ignore_classes` are left out
    of the means.

    Returns:
        The report of `tfdeeplab.metrics.segmentation_report`, plus "images", "scales", "flip",
        "boundary_tolerance_px".
    """
    confusion = np.zeros((num_classes, num_classes), np.int64)
    boundaries = np.zeros((num_classes, 4), np.int64)
    count = 0
    for images, masks in dataset:
        predictions = predict_probabilities(model, images, scales, flip).argmax(-1)
        masks = masks.numpy()
        confusion += confusion_matrix(masks, predictions, num_classes, ignore_label)
        boundaries += boundary_counts(masks, predictions, num_classes, ignore_label, tolerance)
        count += len(masks)
        if progress is not None:
            progress.add(len(masks))
    report = segmentation_report(confusion, boundaries, class_names, ignore_classes)
    report.update(
        images=count, scales=list(scales), flip=bool(flip), boundary_tolerance_px=tolerance
    )
    return report


def prediction_rows(model, dataset, folder, count, scales=(1.0,), flip=False):
    """Up to `count` [image, ground truth, prediction] RGB rows for `plots.prediction_grid`,
    from images spread evenly over `dataset` (consecutive video frames look alike).

    Masks are drawn in the folder's class colours; ignored pixels are white. Rows are cropped
    to the image: the evaluation padding (mean colour, ignored labels) is left out.
    """
    colours = np.asarray(folder.colours, np.uint8)
    total = len(folder)
    wanted = set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist())
    rows = []
    start = 0
    for images, masks in dataset:
        picked = [i for i in range(len(masks)) if start + i in wanted]
        start += len(masks)
        if not picked:
            continue
        images = tf.gather(images, picked).numpy()
        masks = tf.gather(masks, picked).numpy()
        predictions = predict_probabilities(model, images, scales, flip).argmax(-1)
        for image, mask, prediction in zip(images, masks, predictions, strict=True):
            height, width = _unpadded_extent(image, mask, folder.ignore_label)
            truth = colours[np.where(mask == folder.ignore_label, 0, mask)]
            truth[mask == folder.ignore_label] = 255
            row = [image, truth, colours[prediction]]
            rows.append([part[:height, :width] for part in row])
        if len(rows) == len(wanted):
            break
    return rows


def _unpadded_extent(image, mask, ignore_label):
    """(height, width) of `image` without the bottom/right evaluation padding: the rows and
    columns whose labels are all ignored and whose pixels are all the padding colour."""
    padding = (mask == ignore_label) & np.all(
        np.isclose(image, np.asarray(IMAGENET_MEAN_RGB, np.float32), atol=1e-3), axis=-1
    )
    rows = np.flatnonzero(~padding.all(axis=1))
    columns = np.flatnonzero(~padding.all(axis=0))
    if rows.size == 0:
        return mask.shape
    return rows[-1] + 1, columns[-1] + 1
