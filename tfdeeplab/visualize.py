"""Pictures of segmentations: palette colours and side-by-side panels as PNG."""

import io

import numpy as np
from PIL import Image

from tfdeeplab.io import atomic_write_bytes


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


def save_panels(path, panels):
    """Writes RGB panels (each (H, W, 3), values in [0, 255]) side by side as one PNG."""
    row = np.concatenate([np.clip(p, 0, 255).astype(np.uint8) for p in panels], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(row).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
