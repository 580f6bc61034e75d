"""`synthetic_scenes`: a deterministic folder dataset on which context and boundaries matter.

Each scene has a textured background (class 0) and objects of the other classes. Each class has
one shape family and one appearance (hue and texture, jittered per object): discs, rotated boxes,
thin lines (1–3 px, where coarse stride-16 predictions fail), irregular blobs (noisy star-shaped
outlines, where boundaries are hard) and rings. Objects range from a few pixels to most of the
image, and colours overlap between classes, so shape and context are needed too.
"""

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tfdeeplab.atomic import atomic_write_bytes
from tfdeeplab.visualize import palette, png_bytes

SHAPES = ("disc", "box", "line", "blob", "ring")


def _texture(rng, height, width, base, amplitude, period):
    """A colour field: base RGB + smooth waves + pixel noise, (H, W, 3) float."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    wave = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
    noise = rng.normal(0, amplitude, (height, width, 3))
    return base[None, None] + 0.6 * amplitude * wave[..., None] + noise


def _class_style(num_classes, seed):
    """Per class: base colour and texture; neighbouring classes share parts of their hue."""
    rng = np.random.default_rng(seed)
    styles = []
    for index in range(num_classes):
        hue = (index * 0.61803398875) % 1.0
        base = 255 * np.array([abs(math.sin(math.pi * (hue + k / 3))) for k in range(3)])
        styles.append(
            {
                "base": 0.55 * base + 50,
                "amplitude": float(rng.uniform(8, 28)),
                "period": float(rng.uniform(4, 24)),
            }
        )
    return styles


def _draw_object(draw, shape, rng, height, width):
    """Draws one object of `shape` with value 255 into an "L" image."""
    short = min(height, width)
    size = short * math.exp(rng.uniform(math.log(0.02), math.log(0.6)))  # few px .. most
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    if shape == "disc":
        ry, rx = size / 2, size / 2 * rng.uniform(0.5, 1.5)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif shape == "box":
        angle, aspect = rng.uniform(0, math.pi), rng.uniform(0.3, 1.0)
        half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [size / 2, size * aspect / 2]
        rotation = np.array(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
        )
        corners = half @ rotation.T + [cx, cy]
        draw.polygon([tuple(p) for p in corners], fill=255)
    elif shape == "line":
        points = [(cx, cy)]
        heading = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(2, 6))):
            heading += rng.normal(0, 0.6)
            step = max(size, short * 0.15)
            points.append(
                (points[-1][0] + step * math.cos(heading), points[-1][1] + step * math.sin(heading))
            )
        draw.line(points, fill=255, width=int(rng.integers(1, 4)))
    elif shape == "blob":
        count = int(rng.integers(12, 40))
        angles = np.sort(rng.uniform(0, 2 * math.pi, count))
        radii = size / 2 * np.clip(1 + 0.35 * rng.normal(size=count), 0.3, 1.8)
        outline = [
            (cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)
        ]
        draw.polygon(outline, fill=255)
    else:  # ring
        radius = max(size / 2, 3)
        thickness = max(1, int(radius * rng.uniform(0.15, 0.4)))
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius], outline=255, width=thickness
        )


def render_scene(seed, image_size=(128, 128), num_classes=6, style_seed=0):
    """One scene: (RGB uint8 (H, W, 3), class indices uint8 (H, W)), deterministic in `seed`."""
    height, width = image_size
    styles = _class_style(num_classes, style_seed)
    rng = np.random.default_rng(seed)
    background = styles[0]
    image = _texture(
        rng,
        height,
        width,
        background["base"] + rng.normal(0, 20, 3),
        background["amplitude"],
        background["period"],
    )
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        label = int(rng.integers(1, num_classes))
        style = styles[label]
        canvas = Image.new("L", (width, height), 0)
        _draw_object(ImageDraw.Draw(canvas), SHAPES[(label - 1) % len(SHAPES)], rng, height, width)
        inside = np.asarray(canvas) > 0
        texture = _texture(
            rng,
            height,
            width,
            style["base"] + rng.normal(0, 25, 3),
            style["amplitude"],
            style["period"],
        )
        image[inside] = texture[inside]
        mask[inside] = label
    return np.clip(image, 0, 255).astype(np.uint8), mask


def synthetic_scenes(root, num_images=200, image_size=(128, 128), num_classes=6, seed=0):
    """Writes a folder dataset: root/images/*.png, root/masks/*.png (palette), classes.json.

    The same arguments always give the same files. Existing files of the same names are
    replaced (each atomically).

    Args:
        root: output folder.
        num_images: number of scenes.
        image_size: (H, W) or an int.
        num_classes: classes including the background (2 … 255).
        seed: the dataset seed; scene i uses seed * 1_000_003 + i.

    Returns:
        `Path(root)`.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if not 2 <= num_classes <= 255:
        raise ValueError(f"num_classes={num_classes} must be between 2 and 255")
    if num_images < 1:
        raise ValueError(f"num_images={num_images} must be ≥ 1")
    root = Path(root)
    colours = palette(num_classes)
    names = ["background"] + [
        f"{SHAPES[(i - 1) % len(SHAPES)]}{'' if i <= len(SHAPES) else (i - 1) // len(SHAPES)}"
        for i in range(1, num_classes)
    ]
    for index in range(num_images):
        image, mask = render_scene(seed * 1_000_003 + index, image_size, num_classes, seed)
        atomic_write_bytes(root / "images" / f"scene_{index:05d}.png", png_bytes(image))
        atomic_write_bytes(root / "masks" / f"scene_{index:05d}.png", png_bytes(mask, colours))
    classes = {"names": names, "colors": colours.tolist()}  # classes.json's key (file format)
    atomic_write_bytes(root / "classes.json", json.dumps(classes, indent=1).encode())
    return root


# The multispectral scenes' extra class, visible only in the near-infrared band.
NIR_CLASS = "vegetation"


def _near_infrared(rng, mask, vegetation):
    """A near-infrared band: low everywhere (60 ± texture), high on `vegetation` (190 ± texture)
    as plants reflect it; other classes cannot be told apart in it."""
    height, width = mask.shape
    band = _texture(rng, height, width, np.full(3, 60.0), 12.0, 9.0)[..., 0]
    lush = _texture(rng, height, width, np.full(3, 190.0), 12.0, 9.0)[..., 0]
    return np.clip(np.where(vegetation, lush, band), 0, 255)


def render_multispectral_scene(seed, image_size=(128, 128), num_classes=5, style_seed=0):
    """(pixels float (H, W, 4) in [0, 255]: R, G, B, near-infrared; class indices (H, W)):
    a `render_scene` of num_classes − 1 classes plus patches of class num_classes − 1
    (`NIR_CLASS`) on the background, whose R, G, B are the background's own texture: only the
    fourth band separates them."""
    height, width = image_size
    image, mask = render_scene(seed, image_size, num_classes - 1, style_seed)
    rng = np.random.default_rng(seed + 7_919)
    vegetation = np.zeros((height, width), bool)
    for _ in range(int(rng.integers(1, 4))):
        canvas = Image.new("L", (width, height), 0)
        _draw_object(ImageDraw.Draw(canvas), "blob", rng, height, width)
        vegetation |= (np.asarray(canvas) > 0) & (mask == 0)
    mask = np.where(vegetation, num_classes - 1, mask).astype(np.uint8)
    nir = _near_infrared(rng, mask, vegetation)
    return np.concatenate([image.astype(np.float64), nir[..., None]], axis=-1), mask


def multispectral_scenes(
    root, num_images=64, image_size=(128, 128), num_classes=5, seed=0, bands=4
):
    """Writes Esri's "Classified Tiles" layout: root/images/*.tif (16-bit, `bands` of R, G, B,
    near-infrared; georeferenced), root/labels/*.tif (one band of class values) and
    root/esri_model_definition.emd with the classes' names and colours. Needs rasterio.

    `bands=3` writes the same scenes without the near-infrared band: the pair measures what
    the fourth band adds (class `NIR_CLASS` is separable only there).
    """
    from tfdeeplab.geo import rasterio_module

    rasterio = rasterio_module()
    from rasterio.transform import from_origin

    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if bands not in (3, 4) or not 3 <= num_classes <= 255:
        raise ValueError(f"bands={bands} must be 3 or 4 and num_classes={num_classes} ≥ 3")
    root = Path(root)
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    height, width = image_size
    for index in range(num_images):
        pixels, mask = render_multispectral_scene(
            seed * 1_000_003 + index, image_size, num_classes, seed
        )
        stretched = np.round(pixels[..., :bands] * 257).astype(np.uint16)  # 8 → 16 bits
        place = from_origin(500_000 + 10 * width * index, 4_100_000, 10, 10)
        common = {"driver": "GTiff", "height": height, "width": width, "crs": "EPSG:32633",
                  "transform": place}  # fmt: skip
        with rasterio.open(root / "images" / f"tile_{index:05d}.tif", "w", count=bands,
                           dtype="uint16", **common) as image:  # fmt: skip
            image.write(np.moveaxis(stretched, -1, 0))
        with rasterio.open(root / "labels" / f"tile_{index:05d}.tif", "w", count=1,
                           dtype="uint8", **common) as label:  # fmt: skip
            label.write(mask[None])
    names = ["background"] + [SHAPES[(i - 1) % len(SHAPES)] for i in range(1, num_classes - 1)]
    colours = palette(num_classes)
    classes = [
        {"Value": value, "Name": name, "Color": colours[value].tolist()}
        for value, name in enumerate([*names, NIR_CLASS])
    ]
    definition = {"ModelType": "ImageClassification", "Classes": classes}
    atomic_write_bytes(root / "esri_model_definition.emd", json.dumps(definition).encode())
    return root
