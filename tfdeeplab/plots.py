"""Small PNG charts drawn with PIL (no plotting dependency): line panels and bar charts."""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tfdeeplab.atomic import atomic_write_bytes

COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
]
_MARGIN = (60, 30, 20, 40)  # left, top, right, bottom


def _font():
    return ImageFont.load_default()


def _save(image, path):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def _ticks(low, high, count=5):
    if high <= low:
        high = low + 1
    return np.linspace(low, high, count)


def _panel(draw, box, title, series, xlabel):
    """Draws one panel of lines into `box` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    left, top, right, bottom = x0 + _MARGIN[0], y0 + _MARGIN[1], x1 - _MARGIN[2], y1 - _MARGIN[3]
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()])
    ys = ys[np.isfinite(ys)]
    x_low, x_high = float(xs.min()), float(max(xs.max(), xs.min() + 1))
    y_low, y_high = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    pad = 0.05 * max(y_high - y_low, 1e-6)
    y_low, y_high = y_low - pad, y_high + pad

    def at(x, y):
        px = left + (x - x_low) / (x_high - x_low) * (right - left)
        py = bottom - (y - y_low) / (y_high - y_low) * (bottom - top)
        return px, py

    font = _font()
    draw.text((left, y0 + 8), title, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    for value in _ticks(y_low, y_high):
        _, py = at(x_low, value)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((x0 + 4, py - 6), f"{value:.3g}", fill="black", font=font)
    for value in _ticks(x_low, x_high):
        px, _ = at(value, y_low)
        draw.line([px, bottom, px, bottom + 4], fill="black")
        draw.text((px - 8, bottom + 6), f"{value:.3g}", fill="black", font=font)
    draw.text(((left + right) / 2 - 15, bottom + 22), xlabel, fill="black", font=font)
    for index, (name, (x, y)) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = [at(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((right - 110, top + 6 + 14 * index), f"- {name}", fill=colour, font=font)


def line_chart(path, panels, xlabel, title=None, panel_size=(520, 300)):
    """Writes stacked line panels as PNG.

    Args:
        panels: {panel title: {series name: (x values, y values)}}.
    """
    width, height = panel_size
    image = Image.new("RGB", (width, height * len(panels) + (20 if title else 0)), "white")
    draw = ImageDraw.Draw(image)
    offset = 0
    if title:
        draw.text((10, 4), title, fill="black", font=_font())
        offset = 20
    for index, (name, series) in enumerate(panels.items()):
        top = offset + index * height
        _panel(draw, (0, top, width, top + height), name, series, xlabel)
    return _save(image, path)


def bar_chart(path, labels, values, whiskers=None, ylabel="", title="", size=(640, 360)):
    """Writes a bar chart as PNG; `whiskers` optional (low, high) per bar."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    left, top, right, bottom = 60, 30, width - 20, height - 70
    values = np.asarray(values, float)
    high = float(np.nanmax([*values, *(w[1] for w in whiskers or [])])) * 1.1 or 1.0
    draw.text((left, 8), title, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    for value in _ticks(0, high):
        py = bottom - value / high * (bottom - top)
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((4, py - 6), f"{value:.3g}", fill="black", font=font)
    draw.text((4, top - 18), ylabel, fill="black", font=font)
    slot = (right - left) / max(len(values), 1)
    for index, value in enumerate(values):
        x0 = left + index * slot + slot * 0.15
        x1 = left + (index + 1) * slot - slot * 0.15
        py = bottom - value / high * (bottom - top)
        draw.rectangle([x0, py, x1, bottom], fill=COLOURS[index % len(COLOURS)])
        if whiskers:
            low_y = bottom - whiskers[index][0] / high * (bottom - top)
            high_y = bottom - whiskers[index][1] / high * (bottom - top)
            middle = (x0 + x1) / 2
            draw.line([middle, low_y, middle, high_y], fill="black", width=1)
            draw.line([middle - 5, high_y, middle + 5, high_y], fill="black")
            draw.line([middle - 5, low_y, middle + 5, low_y], fill="black")
        draw.text(
            (x0, bottom + 6 + 12 * (index % 4)), str(labels[index])[:24], fill="black", font=font
        )
    return _save(image, path)
