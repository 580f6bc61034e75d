"""Segmentation loss: cross-entropy from logits honouring the ignore label, with optional class
weights, focal modulation and a dice term.

Keras' `SparseCategoricalCrossentropy(ignore_class=...)` covers the plain case, but Keras has no
sparse focal loss and its `Dice` takes one-hot targets without an ignore label, and neither takes
per-class weights; this one loss combines them over the same valid-pixel mask.

Shapes: B batch, H height, W width, C classes.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def sparse_labels(y_true, logits_rank):
    """Class-index labels with one dimension fewer than the logits: (B, H, W) stays, (B, H, W, 1)
    (masks decoded with `tf.io.decode_png(channels=1)`) loses its last axis."""
    labels = ops.convert_to_tensor(y_true)
    if len(labels.shape) == logits_rank:
        if labels.shape[-1] != 1:
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} do not match logits of rank "
                f"{logits_rank}: expected (..., H, W) or (..., H, W, 1) class indices"
            )
        labels = ops.squeeze(labels, axis=-1)
    return labels


def multi_replica_context():
    """The `tf.distribute` replica context when it holds more than one replica, else None
    (outside a strategy, in a one-replica strategy, or in a cross-replica context)."""
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context
    return None


def replica_mean(total, count):
    """`total` / `count`, with `count` summed over all replicas of a `tf.distribute` step.

    Keras sums the gradients of the replicas' losses and divides only non-scalar losses by the
    number of replicas. A loss normalised by the *global* count of valid pixels (or points) is
    exact for any replica count: the replicas' sums of `total` / global count add up to the
    mean over the global batch, whatever the split of ignored pixels between replicas. Outside
    a strategy (one replica) this is `total` / `count`.
    """
    count = tf.stop_gradient(tf.cast(count, tf.float32))
    context = multi_replica_context()
    if context is not None:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return tf.cast(total, tf.float32) / tf.maximum(count, 1.0)


def scale_for_replicas(value):
    """`value` / number of replicas in a `tf.distribute` replica context, so that the sum over
    replicas of a per-replica average is the average over replicas (for terms, such as soft
    dice, that are not sums over pixels)."""
    context = multi_replica_context()
    return value if context is None else value / context.num_replicas_in_sync


def class_weights_from_frequencies(pixel_counts, ignore_zero_counts=True):
    """Median-frequency balancing (Eigen & Fergus 2015): weight_c = median(freq) / freq_c.

    Args:
        pixel_counts: (C,) pixel counts per class.

    Returns:
        (C,) float32 weights; classes with no pixels get weight 0.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    frequencies = counts / max(counts.sum(), 1)
    present = frequencies > 0 if ignore_zero_counts else np.ones_like(frequencies, bool)
    median = np.median(frequencies[present]) if present.any() else 1.0
    weights = np.where(present, median / np.maximum(frequencies, 1e-12), 0.0)
    return weights.astype(np.float32)


@keras.saving.register_keras_serializable(package="tfdeeplab")
class SegmentationLoss(keras.losses.Loss):
    """Cross-entropy (+ focal, + dice) over pixels whose label is not `ignore_label`.

    Args:
        num_classes: C.
        ignore_label: label excluded from the loss.
        class_weights: optional (C,) weights of each pixel's cross-entropy by its true class.
        focal_gamma: γ of the focal term (1 - p_t)^γ (Lin et al. 2017); 0 is plain CE.
        dice_weight: weight of the soft-dice term (1 - mean dice over classes) added to CE.

    Call with y_true (B, H, W) or (B, H, W, 1) int and y_pred logits (B, H, W, C); returns a
    scalar: the mean over the valid pixels of the whole global batch, also under
    `tf.distribute` (see `replica_mean`).
    """

    def __init__(
        self,
        num_classes,
        ignore_label=255,
        class_weights=None,
        focal_gamma=0.0,
        dice_weight=0.0,
        name="segmentation_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} entries; expected num_classes="
                f"{self.num_classes}"
            )
        if focal_gamma < 0 or dice_weight < 0:
            raise ValueError(f"focal_gamma={focal_gamma} and dice_weight={dice_weight} must be ≥ 0")
        self.focal_gamma = float(focal_gamma)
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels = ops.cast(sparse_labels(y_true, len(logits.shape)), "int32")
        valid = ops.not_equal(labels, self.ignore_label)
        safe_labels = ops.where(valid, labels, 0)
        valid_f = ops.cast(valid, "float32")

        log_probs = ops.log_softmax(logits, axis=-1)
        one_hot = ops.one_hot(safe_labels, self.num_classes, dtype="float32")
        log_p_true = ops.sum(log_probs * one_hot, axis=-1)
        per_pixel = -log_p_true
        if self.focal_gamma:
            per_pixel = per_pixel * ops.power(1.0 - ops.exp(log_p_true), self.focal_gamma)
        if self.class_weights is not None:
            per_pixel = per_pixel * ops.take(ops.convert_to_tensor(self.class_weights), safe_labels)
        loss = replica_mean(ops.sum(per_pixel * valid_f), ops.sum(valid_f))

        if self.dice_weight:
            probs = ops.exp(log_probs) * valid_f[..., None]
            one_hot = one_hot * valid_f[..., None]
            axes = tuple(range(len(logits.shape) - 1))
            intersection = ops.sum(probs * one_hot, axis=axes)
            total = ops.sum(probs, axis=axes) + ops.sum(one_hot, axis=axes)
            dice = (2 * intersection + 1.0) / (total + 1.0)
            # Per-replica dice, averaged over replicas: exact with one replica.
            loss = loss + scale_for_replicas(self.dice_weight * (1.0 - ops.mean(dice)))
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "class_weights": self.class_weights,
            "focal_gamma": self.focal_gamma,
            "dice_weight": self.dice_weight,
        }


def point_loss(labels, logits, ignore_label):
    """Cross-entropy of point logits (B, N, K) against labels (B, N), ignoring `ignore_label`:
    the mean over the valid points of the global batch, also under `tf.distribute`."""
    valid = tf.cast(labels != ignore_label, tf.float32)
    per_point = tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.where(labels == ignore_label, 0, labels), tf.cast(logits, tf.float32)
    )
    return replica_mean(tf.reduce_sum(per_point * valid), tf.reduce_sum(valid))
