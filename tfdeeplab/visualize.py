"""Pictures of segmentations: palette colours and masks as PNG (charts: tfdeeplab.plots)."""

import io
from pathlib import Path

import numpy as np
from PIL import Image


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


def write_prediction_pngs(folder, stem, image, mask, colours):
    """`<stem>_mask.png` (palette) in `folder`, and for an RGB image `<stem>_overlay.png` (half
    image, half class colour); multispectral images get no overlay. Each written atomically."""
    from tfdeeplab.atomic import atomic_write_bytes

    atomic_write_bytes(Path(folder) / f"{stem}_mask.png", png_bytes(mask, colours))
    if image.ndim == 3 and image.shape[-1] == 3:
        overlay = (0.5 * image + 0.5 * np.asarray(colours)[mask]).astype(np.uint8)
        atomic_write_bytes(Path(folder) / f"{stem}_overlay.png", png_bytes(overlay))
