"""Georeferenced rasters (GeoTIFF) through rasterio (GDAL), read and written window by window.

rasterio is an optional dependency: `pip install -e ".[geo]"`. Without it, the functions here
raise an ImportError that says so; PNG/JPEG work never needs it.
"""

import json
import os
from pathlib import Path

import numpy as np

from tfdeeplab.tiling import NODATA_CLASS

GEO_EXTRA = 'pip install -e ".[geo]"  (or: pip install rasterio)'
# Internal tiling of the written GeoTIFFs (GDAL's blocks): 256² is GDAL's common choice.
BLOCK = 256
# GDAL's block cache while predicting a raster window by window, in MB. GDAL's default (5% of
# the machine's memory) keeps every block read or written until it is full: on an 8,000²
# raster it made peak memory grow with the raster, against the point of reading by windows.
BLOCK_CACHE_MB = 64


def bounded_cache():
    """A rasterio environment whose GDAL block cache is `BLOCK_CACHE_MB`."""
    return rasterio_module().Env(GDAL_CACHEMAX=BLOCK_CACHE_MB)


def rasterio_module():
    """rasterio, or an ImportError naming the extra that installs it."""
    try:
        import rasterio
    except ImportError:
        raise ImportError(f"reading and writing GeoTIFFs needs rasterio: {GEO_EXTRA}") from None
    return rasterio


class GeoTiffSource:
    """Windows of a raster file (`tfdeeplab.tiling`'s source interface); use as a context
    manager. `require_georeference`: ValueError naming the file when it has no CRS."""

    def __init__(self, path, require_georeference=False):
        rasterio = rasterio_module()
        self.path = Path(path)
        try:
            self.dataset = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as error:
            raise ValueError(f"{self.path}: unreadable raster ({error})") from None
        if require_georeference and self.dataset.crs is None:
            self.dataset.close()
            raise ValueError(
                f"{self.path}: has no coordinate reference system; a georeferenced output needs "
                "a georeferenced input (or write a PNG/array instead)"
            )
        self.height, self.width = self.dataset.height, self.dataset.width
        self.bands = self.dataset.count
        self.profile = self.dataset.profile

    def read(self, top, left, height, width):
        from rasterio.windows import Window

        window = Window(left, top, width, height)
        pixels = np.moveaxis(self.dataset.read(window=window), 0, -1).astype(np.float32)
        valid = self.dataset.dataset_mask(window=window) > 0
        return pixels, valid

    def close(self):
        self.dataset.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class GeoTiffOutput:
    """A single-band uint8 class raster with the source's CRS, transform and size, tiled and
    DEFLATE-compressed, nodata `NODATA_CLASS` where the input had none, a colour table and the
    class names as band tags; with `probabilities`, a second file `<stem>_probabilities.tif`
    with one uint8 band per class (probability × 255). Written to temporary files that are
    renamed when `close(success=True)`, so a killed run leaves no half-written raster."""

    def __init__(self, path, source, class_names, colours, probabilities=False):
        rasterio = rasterio_module()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        profile = {
            "driver": "GTiff",
            "height": source.height,
            "width": source.width,
            "count": 1,
            "dtype": "uint8",
            "nodata": NODATA_CLASS,
            "crs": source.profile.get("crs"),
            "transform": source.profile.get("transform"),
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "compress": "deflate",
        }
        if profile["crs"] is None:  # not georeferenced: no transform to keep either
            profile.pop("crs"), profile.pop("transform")
        self.targets = [self.path]
        self._temporary = [self._temporary_path(self.path)]
        self.classes = rasterio.open(self._temporary[0], "w", **profile)
        self.classes.write_colormap(
            1, {i: (*map(int, colour), 255) for i, colour in enumerate(colours)}
        )
        self.classes.update_tags(1, classes=json.dumps(list(class_names)))
        self.classes.set_band_description(1, "class")
        self.probabilities = None
        if probabilities:
            target = self.path.with_name(f"{self.path.stem}_probabilities.tif")
            self.targets.append(target)
            self._temporary.append(self._temporary_path(target))
            bands = {**profile, "count": len(class_names), "nodata": None}
            self.probabilities = rasterio.open(self._temporary[1], "w", **bands)
            for band, name in enumerate(class_names, 1):
                self.probabilities.set_band_description(band, f"p({name}) × 255")

    @staticmethod
    def _temporary_path(path):
        return path.with_name(f".{path.name}.{os.getpid()}.tmp.tif")

    def write(self, top, classes, probabilities):
        from rasterio.windows import Window

        window = Window(0, top, classes.shape[1], classes.shape[0])
        self.classes.write(classes[None], window=window)
        if self.probabilities is not None:
            scaled = np.round(np.moveaxis(probabilities, -1, 0) * 255).astype(np.uint8)
            self.probabilities.write(scaled, window=window)

    def close(self, success=True):
        for dataset in (self.classes, self.probabilities):
            if dataset is not None:
                dataset.close()
        for temporary, target in zip(self._temporary, self.targets, strict=True):
            if success:
                os.replace(temporary, target)
            else:
                temporary.unlink(missing_ok=True)
