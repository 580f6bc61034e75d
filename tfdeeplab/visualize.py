"""Pictures of segmentations: palette colours and side-by-side panels as PNG."""

import io

import numpy as np
from PIL import Image

from tfdeeplab.atomic import atomic_write_bytes


def palette(num_classes):
    """Distinct RGB colours (num_classes, 3) uint8, the PASCAL VOC bit-interleaving scheme."""
    colours = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    for index in range(num_classes):
        label, shift = index, 7
        while label:
            for channel in range(3):
                colours[index, channel] |= ((label >> channel) & 1) << shift
            label >>= 3
            shift -= 1
    return colours


def colourize(mask, num_classes):
    """Class-index mask (H, W) → RGB picture (H, W, 3) uint8."""
    return palette(num_classes)[np.asarray(mask, dtype=np.int64)]


def png_bytes(array, colours=None):
    """PNG bytes of an RGB array (H, W, 3), or of class indices (H, W) as a palette PNG when
    `colours` (num_classes, 3) is given."""
    array = np.asarray(array)
    if colours is None:
        picture = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    else:
        picture = Image.fromarray(array.astype(np.uint8), "P")
        picture.putpalette(np.asarray(colours, np.uint8).ravel().tolist())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_panels(path, panels):
    """Writes RGB panels (each (H, W, 3), values in [0, 255]) side by side as one PNG."""
    row = np.concatenate([np.clip(p, 0, 255).astype(np.uint8) for p in panels], axis=1)
    return atomic_write_bytes(path, png_bytes(row))


def save_grid(path, rows, titles=None, title_height=14):
    """Writes rows of equally sized RGB panels as one PNG, with optional column titles."""
    from PIL import ImageDraw

    grid = np.concatenate(
        [
            np.concatenate([np.clip(p, 0, 255).astype(np.uint8) for p in row], axis=1)
            for row in rows
        ],
        axis=0,
    )
    if titles:
        header = Image.new("RGB", (grid.shape[1], title_height), "white")
        draw = ImageDraw.Draw(header)
        width = grid.shape[1] // len(titles)
        for index, title in enumerate(titles):
            draw.text((index * width + 4, 1), title, fill="black")
        grid = np.concatenate([np.asarray(header), grid], axis=0)
    return atomic_write_bytes(path, png_bytes(grid))
