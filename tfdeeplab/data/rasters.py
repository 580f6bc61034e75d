"""Reading the images and labels of a segmentation folder whatever their bands and bit depth:
8-bit RGB through PIL as always, (Geo)TIFFs of any band count and type through rasterio when it
is installed (`pip install -e ".[geo]"`; PIL reads the TIFFs it can without it), and the class
names and colours of Esri's "Classified Tiles" exports.
"""

import functools
import json
from pathlib import Path

import numpy as np
from PIL import Image

TIFF_SUFFIXES = (".tif", ".tiff")
# Esri's export writes the classes into its model definition (and some versions into the
# accumulated statistics): [{"Value": v, "Name": ..., "Color": [r, g, b]}, ...].
ESRI_CLASS_FILES = ("esri_model_definition.emd", "esri_accumulated_stats.json")


def _rasterio():
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio


def is_tiff(path):
    return Path(str(path)).suffix.lower() in TIFF_SUFFIXES


def image_info(path):
    """(bands, dtype name, (height, width)) of an image file, reading its pixels once (a corrupt
    file raises OSError or ValueError here)."""
    pixels, _ = read_image_array(path)
    return pixels.shape[2], pixels.dtype.name, pixels.shape[:2]


def read_image_array(path):
    """(pixels (H, W, bands) in the file's own dtype, valid (H, W) bool: False where the file's
    nodata value or mask marks the pixel). JPEG/PNG become RGB; TIFFs keep every band."""
    path = Path(path.decode() if isinstance(path, bytes) else path)
    rasterio = _rasterio()
    if is_tiff(path) and rasterio is not None:
        try:
            with rasterio.open(path) as dataset:
                pixels = np.moveaxis(dataset.read(), 0, -1)
                return pixels, dataset.dataset_mask() > 0
        except rasterio.errors.RasterioIOError as error:
            raise OSError(str(error)) from None
    with Image.open(path) as picture:
        if not is_tiff(path) and picture.mode != "RGB":
            picture = picture.convert("RGB")
        pixels = np.asarray(picture)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return pixels, np.ones(pixels.shape[:2], bool)


def read_label_array(path):
    """Class values (H, W) of a label file: a PNG (grayscale or palette indices) or a one-band
    TIFF (Esri's labels/*.tif)."""
    path = Path(path.decode() if isinstance(path, bytes) else path)
    rasterio = _rasterio()
    if is_tiff(path) and rasterio is not None:
        try:
            with rasterio.open(path) as dataset:
                if dataset.count != 1:
                    raise ValueError(f"label {path} has {dataset.count} bands; labels have one")
                return dataset.read(1)
        except rasterio.errors.RasterioIOError as error:
            raise OSError(str(error)) from None
    with Image.open(path) as picture:
        if picture.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"mask {path} has mode {picture.mode}; masks must be 8-bit grayscale (L) or "
                "palette (P) PNGs, or one-band TIFFs, of class indices"
            )
        return np.asarray(picture)


@functools.lru_cache(maxsize=8)
def _statistics(paths, max_images):
    total, squares, count = 0.0, 0.0, 0
    step = max(1, len(paths) // max_images)
    for path in paths[::step][:max_images]:
        pixels, valid = read_image_array(path)
        values = pixels[valid].astype(np.float64)
        total = total + values.sum(axis=0)
        squares = squares + (values**2).sum(axis=0)
        count += len(values)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 0.0))
    return tuple(mean.tolist()), tuple(np.maximum(std, 1e-6).tolist())


def band_statistics(folder, max_images=64):
    """(mean, std) per band over the valid pixels of up to `max_images` images of `folder`
    spread over it (what `tfdeeplab train` stores in multispectral models)."""
    mean, std = _statistics(tuple(str(p) for p in folder.images), int(max_images))
    return np.asarray(mean), np.asarray(std)


def esri_classes(root):
    """(names, colours) indexed by class value from an Esri Classified Tiles export, or
    (None, None). Values without an entry (0, where Esri keeps no class) are "background"."""
    for name in ESRI_CLASS_FILES:
        path = Path(root) / name
        if not path.is_file():
            continue
        try:
            entries = json.loads(path.read_text()).get("Classes")
            if not entries:
                continue
            by_value = {int(e["Value"]): e for e in entries}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: unreadable Classes entry ({error})") from None
        count = max(by_value) + 1
        names = [str(by_value[v]["Name"]) if v in by_value else "background" for v in range(count)]
        colours = np.zeros((count, 3), np.uint8)
        for value, entry in by_value.items():
            colours[value] = np.asarray(entry.get("Color", [0, 0, 0])[:3], np.uint8)
        return names, colours
    return None, None


def is_raster(folder):
    """Whether `folder` holds rasters, not 8-bit RGB photos: read as float32 bands, padded with
    their band means, without photometric jitter, normalised inside the model with the
    statistics measured on them (`model_input_arguments`)."""
    return folder.bands != 3 or folder.dtype != "uint8"


def label_counts(folder):
    """Pixels per class (int64, num_classes) over every label of `folder`, ignore label left
    out."""
    counts = np.zeros(folder.num_classes, np.int64)
    for path in folder.masks:
        labels = read_label_array(path).ravel().astype(np.int64)
        labels = labels[labels != folder.ignore_label]
        counts += np.bincount(labels, minlength=folder.num_classes)[: folder.num_classes]
    return counts


def model_input_arguments(folder, rgb_bands=None):
    """`DeepLabV3`'s input arguments for `folder`'s images: none for 8-bit RGB photos; for
    rasters their band count and the statistics measured on them (stored in the model)."""
    if not is_raster(folder):
        return {} if rgb_bands is None else {"rgb_bands": rgb_bands}
    mean, std = band_statistics(folder)
    print(
        f"{folder.bands}-band {folder.dtype} rasters: per-band mean "
        f"{np.round(mean, 1).tolist()}, std {np.round(std, 1).tolist()} (stored in the model)"
    )
    return {
        "input_shape": (None, None, folder.bands),
        "band_mean": mean.tolist(),
        "band_std": std.tolist(),
        "rgb_bands": rgb_bands,
    }
