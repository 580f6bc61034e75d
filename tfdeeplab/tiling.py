"""Sliding-window inference on images and rasters of any size, in bounded memory.

A raster is cut into `tile_size`² windows that overlap by `overlap` pixels; the last window of
a row or column is moved back to end at the raster's edge (never padded past it unless the
raster is smaller than a tile, where the window is filled by mirroring). Each window's logits
are weighted by `blend_window` (flat in the middle, a raised-cosine ramp over the overlap) and
the weighted sums are divided by the summed weights, so neighbouring windows fade into each
other and leave no seam.

Windows are processed one row of windows at a time: the only full-width buffers are the
logits of one window row (tile_size × width × classes floats); rows that no later window
reaches are written to the output and dropped. Peak memory therefore grows with the raster's
width, never with its area (`benchmarks` measures it on 2,000² and 8,000² GeoTIFFs).

Sources give `read(top, left, height, width)` → (pixels float32 (h, w, C), valid bool (h, w));
outputs take `write(top, classes, probabilities)` for full-width stripes of rows. `ArraySource`
and `ArrayOutput` hold numpy arrays; `tfdeeplab.geo` reads and writes GeoTIFF windows.
"""

import math

import numpy as np

NODATA_CLASS = 255


def check_tiling(tile_size, overlap, batch_size=1):
    """ValueError naming the argument unless 1 ≤ overlap·2 < tile_size and batch_size ≥ 1
    (overlap 0 is allowed: plain cropping)."""
    if int(tile_size) != tile_size or tile_size < 8:
        raise ValueError(f"tile_size={tile_size!r} must be an integer ≥ 8")
    if int(overlap) != overlap or overlap < 0 or 2 * overlap >= tile_size:
        raise ValueError(
            f"overlap={overlap!r} must be an integer with 0 ≤ 2·overlap < tile_size={tile_size} "
            "(each window needs a middle no neighbour reaches)"
        )
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer ≥ 1")


def tile_origins(length, tile_size, overlap):
    """Window starts along one axis: 0, step, 2·step, … (step = tile_size − overlap), the last
    moved back to length − tile_size so no window passes the edge; [0] when length ≤ tile."""
    if length <= tile_size:
        return [0]
    step = tile_size - overlap
    count = math.ceil((length - tile_size) / step) + 1
    return [min(i * step, length - tile_size) for i in range(count)]


def blend_window(tile_size, overlap):
    """(tile_size, tile_size) float32 weights: 1 in the middle, a raised cosine from near 0 to
    1 over the `overlap` pixels at each edge; > 0 everywhere, so a pixel only one window covers
    keeps that window's logits."""
    ramp = np.ones(tile_size, np.float64)
    if overlap:
        position = (np.arange(overlap) + 0.5) / overlap  # (0, 1), never 0
        rising = 0.5 - 0.5 * np.cos(np.pi * position)
        ramp[:overlap] = rising
        ramp[-overlap:] = rising[::-1]
    return np.outer(ramp, ramp).astype(np.float32)


class ArraySource:
    """An in-memory image (H, W, C) (or (H, W) for one band); `nodata`: a value that marks
    pixels to leave out where every band has it."""

    def __init__(self, image, nodata=None):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise ValueError(f"image of shape {image.shape} must be (H, W) or (H, W, bands)")
        self.image, self.nodata = image, nodata
        self.height, self.width, self.bands = image.shape

    def read(self, top, left, height, width):
        pixels = self.image[top : top + height, left : left + width].astype(np.float32)
        if self.nodata is None:
            valid = np.ones(pixels.shape[:2], bool)
        else:
            valid = ~np.all(pixels == np.float32(self.nodata), axis=-1)
        return pixels, valid


class ArrayOutput:
    """Collects the stripes into `classes` (H, W) uint8 (`NODATA_CLASS` where the input had no
    data) and, with `probabilities`, `probabilities` (H, W, K) float32."""

    def __init__(self, height, width, num_classes, probabilities=False):
        self.classes = np.full((height, width), NODATA_CLASS, np.uint8)
        self.probabilities = (
            np.zeros((height, width, num_classes), np.float32) if probabilities else None
        )

    def write(self, top, classes, probabilities):
        self.classes[top : top + len(classes)] = classes
        if self.probabilities is not None:
            self.probabilities[top : top + len(classes)] = probabilities


def _tile(source, top, left, tile_size):
    """One window padded by mirroring to tile_size² (rasters smaller than a tile), its nodata
    pixels filled with the window's mean of valid pixels per band; None when it is all nodata."""
    height = min(tile_size, source.height - top)
    width = min(tile_size, source.width - left)
    pixels, valid = source.read(top, left, height, width)
    if not valid.any():
        return None, valid
    if not valid.all():
        pixels = np.where(valid[..., None], pixels, pixels[valid].mean(axis=0))
    padding = ((0, tile_size - height), (0, tile_size - width), (0, 0))
    return np.pad(pixels, padding, mode="symmetric"), valid


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class _WindowRow:
    """The weighted logit sums of rows [top, top + tile_size) across the raster's width."""

    def __init__(self, tile_size, width, num_classes):
        self.top = 0
        self.sums = np.zeros((tile_size, width, num_classes), np.float32)
        self.weights = np.zeros((tile_size, width), np.float32)
        self.valid = np.zeros((tile_size, width), bool)

    def add(self, top, left, logits, weights, valid):
        height, width = valid.shape
        rows = slice(top - self.top, top - self.top + height)
        columns = slice(left, left + width)
        self.sums[rows, columns] += logits[:height, :width] * weights[:height, :width, None]
        self.weights[rows, columns] += weights[:height, :width]
        self.valid[rows, columns] |= valid

    def flush(self, count, output, with_probabilities):
        """Writes the first `count` rows to `output`, then moves the rest up."""
        weights = np.maximum(self.weights[:count], 1e-12)[..., None]
        logits = self.sums[:count] / weights
        classes = np.where(self.valid[:count], logits.argmax(-1), NODATA_CLASS).astype(np.uint8)
        probabilities = _softmax(logits) if with_probabilities else None
        output.write(self.top, classes, probabilities)
        for array in (self.sums, self.weights, self.valid):
            array[:-count] = array[count:].copy()
            array[-count:] = 0
        self.top += count


def predict_windows(
    logits_fn,
    source,
    output,
    num_classes,
    tile_size=512,
    overlap=64,
    batch_size=4,
    probabilities=False,
    progress=True,
):
    """Runs `logits_fn` over every window of `source` and writes blended results to `output`.

    Args:
        logits_fn: float32 (B, tile_size, tile_size, C) → logits (B, tile_size, tile_size, K).
        source, output: see the module docstring (`ArraySource`/`ArrayOutput`, or
            `tfdeeplab.geo`'s GeoTIFF reader and writer).
        num_classes: K.
        tile_size, overlap, batch_size: see `check_tiling`.
        probabilities: also pass softmax probabilities (H, W, K) to `output.write`.
        progress: a Keras progress bar over windows.

    Returns:
        {"tiles": windows in all, "skipped": windows that were all nodata, "batches": model
        calls}.
    """
    check_tiling(tile_size, overlap, batch_size)
    rows = tile_origins(source.height, tile_size, overlap)
    columns = tile_origins(source.width, tile_size, overlap)
    window = blend_window(tile_size, overlap)
    row = _WindowRow(tile_size, source.width, num_classes)
    bar = _progress_bar(len(rows) * len(columns)) if progress else None
    counts = {"tiles": len(rows) * len(columns), "skipped": 0, "batches": 0}
    for index, top in enumerate(rows):
        if index:
            row.flush(top - row.top, output, probabilities)
        for start in range(0, len(columns), batch_size):
            lefts = columns[start : start + batch_size]
            tiles = [(left, *_tile(source, top, left, tile_size)) for left in lefts]
            kept = [t for t in tiles if t[1] is not None]
            counts["skipped"] += len(tiles) - len(kept)
            if kept:
                logits = np.asarray(logits_fn(np.stack([t[1] for t in kept])), np.float32)
                counts["batches"] += 1
                for (left, _, valid), tile_logits in zip(kept, logits, strict=True):
                    row.add(top, left, tile_logits, window, valid)
            if bar is not None:
                bar.add(len(lefts))
    row.flush(source.height - row.top, output, probabilities)
    return counts


def _progress_bar(total):
    import keras

    return keras.utils.Progbar(total, unit_name="tile")


def seam_error(tiled, whole, tile_size, overlap, margin=0):
    """Max |tiled − whole| on the pixels next to window edges (rows and columns where a window
    starts or ends), against the same on all pixels: the seam metric of tiled inference.

    Returns:
        {"edges": max abs difference on window-edge lines, "all": over every pixel,
        "edges_mean", "elsewhere_mean": mean abs difference on and off those lines}.
    """
    tiled, whole = np.asarray(tiled, np.float64), np.asarray(whole, np.float64)
    height, width = tiled.shape[:2]
    lines_y = {y + d for y in tile_origins(height, tile_size, overlap) for d in (0, tile_size - 1)}
    lines_x = {x + d for x in tile_origins(width, tile_size, overlap) for d in (0, tile_size - 1)}
    edge = np.zeros((height, width), bool)
    edge[[y for y in lines_y if margin <= y < height - margin], :] = True
    edge[:, [x for x in lines_x if margin <= x < width - margin]] = True
    difference = np.abs(tiled - whole)
    if difference.ndim == 3:
        difference = difference.max(axis=-1)
    return {
        "edges": float(difference[edge].max()),
        "all": float(difference.max()),
        "edges_mean": float(difference[edge].mean()),
        "elsewhere_mean": float(difference[~edge].mean()),
    }
