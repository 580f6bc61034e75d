"""Segmentation loss: cross-entropy from logits honouring the ignore label, with optional class
weights, focal modulation and a dice term.

Keras' `SparseCategoricalCrossentropy(ignore_class=...)` covers the plain case, but Keras has no
sparse focal loss and its `Dice` takes one-hot targets without an ignore label, and neither takes
per-class weights; this one loss combines them over the same valid-pixel mask.

Shapes: B batch, H height, W width, C classes.
"""

import keras
import numpy as np
from keras import ops


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

    Call with y_true (B, H, W) int and y_pred logits (B, H, W, C); returns a scalar.
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
        labels = ops.cast(y_true, "int32")
        valid = ops.not_equal(labels, self.ignore_label)
        safe_labels = ops.where(valid, labels, 0)
        valid_f = ops.cast(valid, "float32")
        count = ops.maximum(ops.sum(valid_f), 1.0)

        log_probs = ops.log_softmax(logits, axis=-1)
        one_hot = ops.one_hot(safe_labels, self.num_classes, dtype="float32")
        log_p_true = ops.sum(log_probs * one_hot, axis=-1)
        per_pixel = -log_p_true
        if self.focal_gamma:
            per_pixel = per_pixel * ops.power(1.0 - ops.exp(log_p_true), self.focal_gamma)
        if self.class_weights is not None:
            per_pixel = per_pixel * ops.take(ops.convert_to_tensor(self.class_weights), safe_labels)
        loss = ops.sum(per_pixel * valid_f) / count

        if self.dice_weight:
            probs = ops.exp(log_probs) * valid_f[..., None]
            one_hot = one_hot * valid_f[..., None]
            axes = tuple(range(len(logits.shape) - 1))
            intersection = ops.sum(probs * one_hot, axis=axes)
            total = ops.sum(probs, axis=axes) + ops.sum(one_hot, axis=axes)
            dice = (2 * intersection + 1.0) / (total + 1.0)
            loss = loss + self.dice_weight * (1.0 - ops.mean(dice))
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
