"""tf.data pipelines of (float32 image in [0, 255], int32 mask) pairs from a segmentation folder.

Training augmentation follows the DeepLab papers: random scale in [0.5, 2.0], padding (image with
the ImageNet mean, mask with the ignore label) up to the crop, random crop, horizontal flip and
mild photometric jitter. Masks are always resized with nearest neighbour.

Evaluation scores at the original resolution, as DeepLab does: images are padded (mean colour,
masks with the ignore label, which no metric counts) to one canvas for the whole folder, at
least the crop size and at least its largest image, and never resized
(`EvalView.ORIGINAL`). `EvalView.RESIZE` is the explicit alternative: the longer side resized
to the crop size, then padded; its scores are those of a resized copy of the labels.
"""

import dataclasses
import enum
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfdeeplab.data.folder import SegmentationFolder, scan_folder
from tfdeeplab.data.rasters import (
    band_statistics,
    is_raster,
    read_image_array,
    read_label_array,
)
from tfdeeplab.layers.resize_like import IMAGENET_MEAN_RGB

SPLITS = ("train", "val")


class EvalView(str, enum.Enum):
    """How evaluation batches show images: at their original resolution (padded) or resized.

    FIT is for fixed-size inputs (an exported TFLite model): ORIGINAL when every image fits
    the size, else RESIZE, with a warning (such an input cannot see larger images whole).
    """

    ORIGINAL = "original"
    RESIZE = "resize"
    FIT = "fit"


def evaluation_canvas(folder, image_size):
    """(H, W) every image of `folder` is padded to for `EvalView.ORIGINAL`: at least
    `image_size` (DeepLab pads 500-pixel PASCAL images to 513) and at least the largest image."""
    heights = [h for h, _ in folder.sizes] or [0]
    widths = [w for _, w in folder.sizes] or [0]
    return max(int(image_size[0]), max(heights)), max(int(image_size[1]), max(widths))


def _resolve_view(view, folder, size):
    if view is not EvalView.FIT:
        return view
    canvas = evaluation_canvas(folder, size)
    if canvas == size:
        return EvalView.ORIGINAL
    warnings.warn(
        f"images up to {canvas[0]}×{canvas[1]} do not fit the {size[0]}×{size[1]} input: "
        "using copies resized to it",
        stacklevel=4,
    )
    return EvalView.RESIZE


def decode_image(path):
    """RGB uint8 (H, W, 3). TF decodes JPEG/PNG (gray and RGBA become RGB); PIL decodes TIFF."""
    is_tiff = tf.strings.regex_full_match(tf.strings.lower(path), r".*\.tiff?")

    def with_pil():
        return tf.numpy_function(lambda p: read_image_array(p)[0], [path], tf.uint8)

    def with_tf():
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    image = tf.cond(is_tiff, with_pil, with_tf)
    return tf.ensure_shape(image, (None, None, 3))


def decode_raster(path, bands):
    """(float32 (H, W, bands) in the file's own units, bool (H, W) valid pixels) of any image
    file (`tfdeeplab.data.rasters.read_image_array`: TIFFs of any bands and type)."""

    def read(p):
        pixels, valid = read_image_array(p)
        return pixels.astype(np.float32), valid

    image, valid = tf.numpy_function(read, [path], (tf.float32, tf.bool))
    return tf.ensure_shape(image, (None, None, bands)), tf.ensure_shape(valid, (None, None))


def decode_mask(path):
    """Class indices (H, W) int32 of a PNG (PIL keeps palette indices; tf.io.decode_png would
    turn them into colours) or a one-band TIFF."""
    mask = tf.numpy_function(lambda p: read_label_array(p).astype(np.int32), [path], tf.int32)
    return tf.ensure_shape(mask, (None, None))


def check_ignore_classes(ignore_classes, num_classes, ignore_label):
    """`ignore_classes` as a sorted tuple of ints, each a class of 0..num_classes-1 other than
    the ignore label; a ValueError names a value that is not."""
    classes = tuple(sorted({int(c) for c in ignore_classes}))
    for value in classes:
        if not 0 <= value < num_classes or value == ignore_label:
            raise ValueError(
                f"ignore_classes: {value} is not a class of this data (0..{num_classes - 1}, "
                f"ignore label {ignore_label})"
            )
    if len(classes) >= num_classes:
        raise ValueError(f"ignore_classes={list(classes)} leaves no class to learn")
    return classes


def ignore_class_values(mask, ignore_classes, ignore_label):
    """`mask` with every value in `ignore_classes` set to `ignore_label`, so that no loss and no
    metric counts those pixels (arcgis.learn's `ignore_classes`)."""
    if not ignore_classes:
        return mask
    hit = tf.reduce_any(mask[..., None] == tf.constant(ignore_classes, mask.dtype), axis=-1)
    return tf.where(hit, tf.constant(ignore_label, mask.dtype), mask)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation settings (DeepLabV3, section 4). Views are scaled by a factor
    drawn uniformly from [min_scale, max_scale]."""

    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1


def _pad_to(image, mask, height, width, ignore_label, fill=IMAGENET_MEAN_RGB):
    """Pads at the bottom/right to at least (height, width): image with `fill` (one value per
    band: the mean colour), mask with the ignore label."""
    pad_h = tf.maximum(height - tf.shape(image)[0], 0)
    pad_w = tf.maximum(width - tf.shape(image)[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    mean = tf.constant(fill, tf.float32)
    image = tf.pad(image - mean, paddings + [[0, 0]]) + mean
    mask = tf.pad(mask, paddings, constant_values=ignore_label)
    return image, mask


def _resize_pair(image, mask, size):
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, mask


def augment_pair(
    image, mask, crop_size, ignore_label, settings=Augmentation(), fill=IMAGENET_MEAN_RGB,
    photometric=True,
):  # fmt: skip
    """One random training view: scale, pad (with `fill`, one value per band), crop, flip and,
    with `photometric` (8-bit RGB photos), jitter. Shapes (h, w, bands) and (h, w)."""
    height, width = crop_size
    bands = image.shape[-1]
    scale = tf.random.uniform([], settings.min_scale, settings.max_scale)
    size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
    image, mask = _resize_pair(tf.cast(image, tf.float32), mask, tf.maximum(size, 1))
    image, mask = _pad_to(image, mask, height, width, ignore_label, fill)
    stacked = tf.concat([image, tf.cast(mask[..., None], tf.float32)], axis=-1)
    stacked = tf.image.random_crop(stacked, (height, width, bands + 1))
    if settings.flip:
        stacked = tf.image.random_flip_left_right(stacked)
    image, mask = stacked[..., :bands], tf.cast(stacked[..., bands], tf.int32)
    if not photometric:
        return image, mask
    image = image / 255.0
    image = tf.image.random_brightness(image, settings.brightness)
    image = tf.image.random_contrast(image, 1 - settings.contrast, 1 + settings.contrast)
    image = tf.image.random_saturation(image, 1 - settings.saturation, 1 + settings.saturation)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0, mask


def pad_pair_for_eval(image, mask, size, ignore_label, fill=IMAGENET_MEAN_RGB):
    """Original resolution, padded at the bottom/right to `size` (H, W) ≥ the image's."""
    image, mask = _pad_to(tf.cast(image, tf.float32), mask, size[0], size[1], ignore_label, fill)
    return image[: size[0], : size[1]], mask[: size[0], : size[1]]


def resize_pair_for_eval(image, mask, size, ignore_label, fill=IMAGENET_MEAN_RGB):
    """Deterministic view: the longer side becomes the crop size, then pad to (height, width)."""
    height, width = size
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    ratio = tf.minimum(height / shape[0], width / shape[1])
    new_size = tf.maximum(tf.cast(tf.round(shape * ratio), tf.int32), 1)
    image, mask = _resize_pair(tf.cast(image, tf.float32), mask, new_size)
    image, mask = _pad_to(image, mask, height, width, ignore_label, fill)
    return image[:height, :width], mask[:height, :width]


def _split(folder, split, val_fraction, seed):
    """A subset of `folder` for a fraction split: a fixed permutation of the sorted pairs."""
    order = np.random.default_rng(seed).permutation(len(folder))
    count = max(1, round(len(folder) * val_fraction))
    if count >= len(folder):
        raise ValueError(
            f"val_fraction={val_fraction} leaves no training images out of {len(folder)}"
        )
    chosen = sorted(order[:count] if split == "val" else order[count:])
    return dataclasses.replace(
        folder,
        images=tuple(folder.images[i] for i in chosen),
        masks=tuple(folder.masks[i] for i in chosen),
        sizes=tuple(folder.sizes[i] for i in chosen) if folder.sizes else (),
    )


def scan_split(root, split=None, val_fraction=0.1, seed=0, **scan_kwargs):
    """Scans `root/<split>` when that folder exists, else a seeded fraction of `root`.

    Args:
        root: the data folder.
        split: None (all pairs), "train" or "val".
        val_fraction: the share of pairs in "val" when there are no split folders.
        seed: the seed of that fixed split.
        scan_kwargs: passed to `scan_folder` (num_classes, ignore_label, skip_bad).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; choose one of: {', '.join(SPLITS)}")
    root = Path(root)
    if split is not None and (root / split).is_dir():
        return scan_folder(root / split, **scan_kwargs)
    if (
        split is None
        and all((root / s).is_dir() for s in SPLITS)
        and not (root / "images").is_dir()
    ):
        raise ValueError(f"{root} holds train/ and val/ folders; pass split='train' or 'val'")
    folder = scan_folder(root, **scan_kwargs)
    return folder if split is None else _split(folder, split, val_fraction, seed)


def _photo_pair(ignored, ignore):
    return lambda i, m: (decode_image(i), ignore_class_values(decode_mask(m), ignored, ignore))


def _raster_pair(bands, ignored, ignore):
    """Decodes a raster pair; pixels the image marks as nodata get the ignore label."""

    def decode(image_path, mask_path):
        image, valid = decode_raster(image_path, bands)
        mask = ignore_class_values(decode_mask(mask_path), ignored, ignore)
        return image, tf.where(valid, mask, tf.constant(ignore, mask.dtype))

    return decode


def make_dataset(
    folder: SegmentationFolder,
    image_size=(513, 513),
    batch_size=8,
    augment=True,
    shuffle=True,
    cache=False,
    seed=None,
    repeat=False,
    drop_remainder=None,
    eval_view=EvalView.ORIGINAL,
    ignore_classes=(),
    augmentation=Augmentation(),
):
    """The tf.data pipeline over a validated folder; see `load_segmentation_folder`.
    `augmentation`: the `Augmentation` settings of training views (with `augment`)."""
    size = tuple(int(s) for s in image_size)
    ignore = folder.ignore_label
    ignored = check_ignore_classes(ignore_classes, folder.num_classes, ignore)
    paths = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in folder.images], [str(p) for p in folder.masks])
    )
    # Shuffle after the cache: a cache replays the order it recorded in its first epoch, so
    # shuffling before it would freeze the sample order for all later epochs. Without a cache
    # the (small) file names are shuffled, not the decoded images.
    if shuffle and not cache:
        paths = paths.shuffle(len(folder), seed=seed, reshuffle_each_iteration=True)
    fill, decode, raster = IMAGENET_MEAN_RGB, _photo_pair(ignored, ignore), is_raster(folder)
    if raster:
        fill = tuple(band_statistics(folder)[0].tolist())
        decode = _raster_pair(folder.bands, ignored, ignore)
    pairs = paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        pairs = pairs.cache(cache if isinstance(cache, str) else "")
        if shuffle:
            pairs = pairs.shuffle(len(folder), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        pairs = pairs.repeat()
    if augment:
        views = pairs.map(
            lambda i, m: augment_pair(i, m, size, ignore, augmentation, fill, not raster),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    elif _resolve_view(EvalView(eval_view), folder, size) is EvalView.RESIZE:
        views = pairs.map(
            lambda i, m: resize_pair_for_eval(i, m, size, ignore, fill),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        size = evaluation_canvas(folder, size)
        views = pairs.map(
            lambda i, m: pad_pair_for_eval(i, m, size, ignore, fill),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    views = views.map(
        lambda i, m: (tf.ensure_shape(i, (*size, folder.bands)), tf.ensure_shape(m, size)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    drop = augment if drop_remainder is None else drop_remainder
    return views.batch(batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)


def load_segmentation_folder(
    root,
    image_size=(513, 513),
    batch_size=8,
    augment=True,
    shuffle=True,
    num_classes=None,
    ignore_label=255,
    split=None,
    val_fraction=0.1,
    seed=0,
    cache=False,
    skip_bad=False,
    eval_view=EvalView.ORIGINAL,
    ignore_classes=(),
):
    """A `tf.data.Dataset` of (float32 images (B, H, W, 3) in [0, 255], int32 masks (B, H, W)).

    Every pair is validated once here (see `tfdeeplab.data.folder`); bad data raises a
    `DataError` naming the file, or with `skip_bad` is left out with a warning listing it.

    Args:
        root: the data folder (images/ and masks/ or labels/, optional train/ and val/).
        image_size: (H, W) of the training crops; for evaluation, the smallest canvas the
            images are padded to (see `eval_view`).
        batch_size: batch size; training batches drop the remainder.
        augment: DeepLab training augmentation; False gives the deterministic evaluation view.
        eval_view: `EvalView` "original" (default: original resolution, padded to
            `evaluation_canvas`, never resized), "resize" (longer side to `image_size`) or
            "fit" (original when every image fits `image_size`, else resize).
        shuffle: shuffle the files every epoch.
        num_classes: number of classes; default from classes.json or the largest label + 1.
        ignore_label: mask value ignored by losses and metrics (and used for padding).
        split: None, "train" or "val" (split folders, else a seeded `val_fraction`).
        val_fraction, seed: the fixed fraction split.
        cache: cache decoded files in memory (True) or in a file path.
        skip_bad: warn about and leave out bad pairs instead of raising.
        ignore_classes: class values whose pixels become `ignore_label` (no loss, no metric).
    """
    folder = scan_split(
        root,
        split,
        val_fraction,
        seed,
        num_classes=num_classes,
        ignore_label=ignore_label,
        skip_bad=skip_bad,
    )
    return make_dataset(
        folder,
        image_size,
        batch_size,
        augment,
        shuffle,
        cache,
        seed,
        eval_view=eval_view,
        ignore_classes=ignore_classes,
    )
