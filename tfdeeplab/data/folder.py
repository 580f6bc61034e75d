"""Finding and validating image/mask pairs of a segmentation folder.

Layout (the `labels/` name is what many annotation tools export):

    root/images/*.{jpg,jpeg,png,tif,tiff}    root/masks/*.png  (or root/labels/*.{png,tif})
    root/classes.json                         optional: {"names": [...], "colors": [[r,g,b],...]}
    root/train/{images,masks}, root/val/...   optional fixed splits

Esri's "Classified Tiles" exports (images/*.tif, labels/*.tif, esri_model_definition.emd)
load as they are: their classes come from the export's "Classes" entries. TIFF images may
have any number of bands and any pixel type (rasterio reads them; see `tfdeeplab.data.rasters`);
every image of a folder must have the same band count.

Masks are 8-bit grayscale ("L") or palette ("P") PNGs whose values are class indices; the ignore
label marks pixels that count for nothing. Every pair is checked once, when the dataset is built.
"""

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from tfdeeplab.data.rasters import esri_classes, image_info, read_label_array

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
MASK_FOLDERS = ("masks", "labels")


class DataError(ValueError):
    """A dataset problem; the message names the offending file or folder."""


@dataclasses.dataclass(frozen=True)
class SegmentationFolder:
    """The validated pairs of one folder (or one split of it).

    Attributes:
        images, masks: paths of matched pairs, sorted by stem.
        num_classes: number of classes (from the argument, classes.json or the largest label).
        class_names: one name per class.
        colours: (num_classes, 3) uint8 colours for pictures (classes.json's "colors").
        ignore_label: label value that is ignored by losses and metrics.
        skipped: (path, reason) of pairs left out with `skip_bad`.
        sizes: (height, width) of each pair's image.
        bands: the images' band count (3 for RGB photos; every image has the same).
        dtype: the images' pixel type ("uint8" for photos; "uint16", "float32", … for
            rasters, which are read as float32 and normalised with measured statistics).
    """

    images: tuple
    masks: tuple
    num_classes: int
    class_names: tuple
    colours: np.ndarray
    ignore_label: int
    skipped: tuple = ()
    sizes: tuple = ()
    bands: int = 3
    dtype: str = "uint8"

    def __len__(self):
        return len(self.images)


def read_classes(root):
    """(names, colours) from `root/classes.json`, or (None, None) without one."""
    path = Path(root) / "classes.json"
    if not path.exists():
        try:
            return esri_classes(root)
        except ValueError as error:
            raise DataError(str(error)) from None
    try:
        spec = json.loads(path.read_text())
        names = [str(n) for n in spec["names"]]
        colours = spec.get("colors")
        if colours is not None:
            colours = np.asarray(colours, dtype=np.uint8).reshape(len(names), 3)
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{path}: expected {{'names': [...], 'colors': [[r, g, b], ...]}} ({error})"
        ) from None
    return names, colours


def image_paths(source):
    """The image files to predict: `source` itself, or the images in folder `source`, sorted;
    FileNotFoundError / ValueError naming `--input` when there are none."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        paths = [source]
    else:
        raise FileNotFoundError(f"--input {source}: no such file or folder")
    if not paths:
        raise ValueError(f"--input {source}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def _mask_folder(root):
    for name in MASK_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no masks folder; expected one of: {', '.join(MASK_FOLDERS)}")


def find_pairs(root):
    """Image and mask paths matched by stem under `root/images` and `root/masks|labels`.

    Returns:
        (pairs, problems): pairs [(image, mask)], problems [(path, reason)] for images without a
        mask.
    """
    root = Path(root)
    if not (root / "images").is_dir():
        raise DataError(f"{root}: no images/ folder (expected {root / 'images'})")
    masks = {p.stem: p for p in _mask_folder(root).iterdir() if p.suffix.lower() in MASK_SUFFIXES}
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(
            f"{root / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)}); the folder is empty"
        )
    pairs, problems = [], []
    for image in images:
        if image.stem in masks:
            pairs.append((image, masks[image.stem]))
        else:
            problems.append((image, "no mask with the same name in " + str(_mask_folder(root))))
    return pairs, problems


def _check_pair(image_path, mask_path, num_classes, ignore_label):
    """Returns (largest label, reason or None, (height, width), (bands, dtype)). Reads both
    files fully once."""
    try:
        bands, dtype, image_size = image_info(image_path)
    except (OSError, ValueError, UnidentifiedImageError) as error:
        return -1, f"unreadable or corrupt image ({error})", None, None
    try:
        labels = read_label_array(mask_path)
    except ValueError as error:
        return -1, str(error), None, None
    except (OSError, UnidentifiedImageError) as error:
        return -1, f"unreadable or corrupt mask {mask_path} ({error})", None, None
    if labels.shape != image_size:
        return (
            -1,
            f"mask {mask_path} is {labels.shape[1]}×{labels.shape[0]}, image is "
            f"{image_size[1]}×{image_size[0]}",
            None,
            None,
        )
    values = np.unique(labels)
    values = values[values != ignore_label]
    if num_classes is not None and values.size and values.max() >= num_classes:
        bad = values[values >= num_classes].tolist()
        return (
            -1,
            (
                f"mask {mask_path} has labels {bad} ≥ num_classes={num_classes} "
                f"(the ignore label is {ignore_label})"
            ),
            None,
            None,
        )
    return int(values.max()) if values.size else -1, None, labels.shape, (bands, dtype)


def _same_bands(pairs_info, problems):
    """(bands, dtype) of the first good pair; pairs with another band count become problems
    naming both files. Returns the kept indices too."""
    first = pairs_info[0]
    kept = []
    for index, (image, info) in enumerate(pairs_info):
        if info[0] != first[1][0]:
            problems.append(
                (image, f"has {info[0]} bands; {first[0]} has {first[1][0]} (one count per folder)")
            )
        else:
            kept.append(index)
    dtypes = {info[1] for _, info in pairs_info}
    return first[1][0], first[1][1] if len(dtypes) == 1 else "float32", kept


def scan_folder(root, num_classes=None, ignore_label=255, skip_bad=False):
    """Finds and validates every pair under `root`; see the module docstring for the layout.

    Args:
        root: the folder (or one split folder) holding images/ and masks/.
        num_classes: number of classes; default: classes.json, else the largest label + 1.
        ignore_label: label value that is ignored.
        skip_bad: leave bad pairs out with one warning listing them, instead of raising.

    Returns:
        A `SegmentationFolder`.

    Raises:
        DataError: naming the first bad file (or the folder) unless `skip_bad`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    # A split folder (root/train) shares the classes.json of the dataset above it.
    names, colours = read_classes(root)
    if names is None:
        names, colours = read_classes(root.parent)
    if num_classes is None and names is not None:
        num_classes = len(names)
    if num_classes is not None and num_classes < 1:
        raise DataError(f"num_classes={num_classes} must be ≥ 1")
    pairs, problems = find_pairs(root)
    good, sizes, infos, largest = [], [], [], -1
    for image, mask in pairs:
        label, reason, size, info = _check_pair(image, mask, num_classes, ignore_label)
        if reason:
            problems.append((image, reason))
        else:
            good.append((image, mask))
            sizes.append(tuple(int(s) for s in size))
            infos.append((image, info))
            largest = max(largest, label)
    bands, dtype = 3, "uint8"
    if good:
        bands, dtype, kept = _same_bands(infos, problems)
        good, sizes = [good[i] for i in kept], [sizes[i] for i in kept]
    if problems and not skip_bad:
        path, reason = problems[0]
        more = f" (and {len(problems) - 1} more bad pairs)" if len(problems) > 1 else ""
        raise DataError(f"{path}: {reason}{more}; pass skip_bad=True / --skip-bad to leave out")
    if problems:
        listing = "\n".join(f"  {path}: {reason}" for path, reason in problems)
        warnings.warn(f"skipped {len(problems)} bad pairs under {root}:\n{listing}", stacklevel=2)
    if not good:
        raise DataError(f"{root}: no usable image/mask pairs")
    num_classes = num_classes if num_classes is not None else largest + 1
    names = tuple(names) if names else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise DataError(f"classes.json names {len(names)} classes but num_classes={num_classes}")
    if colours is None:
        from tfdeeplab.visualize import palette

        colours = palette(num_classes)
    images, masks = zip(*good, strict=True)
    return SegmentationFolder(
        images, masks, num_classes, names, colours, ignore_label, tuple(problems),
        tuple(sizes), bands, dtype,
    )  # fmt: skip
