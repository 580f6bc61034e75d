"""Calibration and fine-tuning data for quantization, from the real tf.data input pipeline.

Full-integer quantization sets every activation's range from representative images; ranges
from images that look like the deployment data (same decoding, resizing and padding as
evaluation) are what keep int8 accuracy close to float.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfdeeplab.data import EvalView, load_segmentation_folder


def calibration_dataset(
    root,
    input_size,
    split="train",
    batch_size=1,
    augment=False,
    shuffle=True,
    eval_view=EvalView.FIT,
    **kwargs,
):
    """(images (B, H, W, 3) float32 in [0, 255], masks (B, H, W)) batches of a data folder.

    Args:
        root: a segmentation folder (see `tfdeeplab.data.load_segmentation_folder`).
        input_size: (H, W) of the exported model.
        split: "train", "val" or None (all pairs).
        batch_size: images per batch.
        augment: DeepLab training augmentation (for quantization-aware fine-tuning) instead of
            the deterministic evaluation view (for calibration and verification).
        shuffle: shuffle the files (calibration draws from all of them, not the first few).
        eval_view: `EvalView.FIT` (default): the original resolution padded to `input_size`
            when every image fits it (then the artifact's scores are at the labels' own
            resolution), else copies resized to it, with a warning; or "original"/"resize".
        kwargs: more `load_segmentation_folder` arguments (num_classes, ignore_label, ...).
    """
    return load_segmentation_folder(
        root,
        image_size=tuple(input_size),
        batch_size=batch_size,
        augment=augment,
        shuffle=shuffle,
        split=split,
        eval_view=eval_view,
        **kwargs,
    )


@dataclasses.dataclass(frozen=True)
class ExportData:
    """One data folder at one export size, as every export step reads it: its train split
    calibrates int8 and fine-tunes QAT, its val split verifies the artifact. Split with the
    same `seed` and `val_fraction` as the training run, so verification sees no training image.
    """

    root: str
    input_size: tuple
    seed: int = 0
    val_fraction: float = 0.1
    ignore_label: int = 255

    def split(self, name, augment=False, batch_size=1, shuffle=True):
        """`calibration_dataset` of split `name` ("train" or "val")."""
        return calibration_dataset(
            self.root,
            self.input_size,
            split=name,
            batch_size=batch_size,
            augment=augment,
            shuffle=shuffle,
            seed=self.seed,
            val_fraction=self.val_fraction,
            ignore_label=self.ignore_label,
        )


def _batches(data):
    if callable(data):
        data = data()
    if isinstance(data, np.ndarray | tf.Tensor):
        data = [data]
    yield from data


def representative_images(data, size, steps):
    """Yields `[image (1, H, W, bands) float32]` for `TFLiteConverter.representative_dataset`.

    Args:
        data: a tf.data.Dataset, an iterable or a generator function of image batches
            (B, H, W, bands) or (images, masks) pairs, or one array of images.
        size: (H, W) the images are resized to (bilinear) when theirs differs; None keeps it.
        steps: the number of images to yield at most.
    """
    count = 0
    for batch in _batches(data):
        images = batch[0] if isinstance(batch, tuple | list) else batch
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank == 3:
            images = images[None]
        if images.shape.rank != 4:
            raise ValueError(
                f"representative_data gave a batch of shape {images.shape}; expected images "
                "(B, H, W, bands) or (images, masks) pairs"
            )
        for index in range(images.shape[0]):
            if count >= steps:
                return
            image = images[index : index + 1]
            if size is not None and None not in size and tuple(image.shape[1:3]) != tuple(size):
                image = tf.image.resize(image, size, method="bilinear")
            yield [image.numpy()]
            count += 1
    if count == 0:
        raise ValueError("representative_data yielded no images")
