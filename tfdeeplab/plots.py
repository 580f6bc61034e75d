"""PNG charts with matplotlib: training curves, latency bars, per-class IoU bars, prediction grids.

Figures are drawn on matplotlib's Agg canvas through its object API (`matplotlib.figure.Figure`),
so nothing here touches pyplot's global state or the user's backend. Files are written
atomically.
"""

import csv
import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from tfdeeplab.atomic import atomic_write_bytes

DPI = 100


def _save(figure, path):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


def read_history(path):
    """Keras' CSVLogger file as {column: float array}; empty cells (a metric missing in some
    epochs) become NaN."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return {}
    return {
        name: np.array([float(row[name]) if row[name] else np.nan for row in rows])
        for name in rows[0]
    }


def training_curves(path, history, title="Training curve"):
    """Loss and mean IoU per epoch (train and validation) side by side, epochs counted from 1.

    Args:
        history: {column: values per epoch} with an "epoch" column (0-based, as CSVLogger
            writes it), e.g. `read_history("history.csv")`.
    """
    epochs = np.asarray(history["epoch"], dtype=int) + 1
    panels = (
        ("loss", ("loss", "val_loss")),
        ("mean IoU", ("mean_iou", "val_mean_iou")),
    )
    figure = Figure(figsize=(10, 4), layout="constrained")
    figure.suptitle(title)
    for axes, (name, columns) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        for column in columns:
            if column in history:
                label = f"{'validation' if column.startswith('val_') else 'training'} {name}"
                axes.plot(epochs, history[column], marker="o", markersize=3, label=label)
        axes.set(title=name, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend()
    return _save(figure, path)


def lr_sweep_chart(path, result, title="Learning-rate range test"):
    """Loss per step and its smoothed curve against the learning rate (log axis), with the
    suggested rate and the rate at the lowest smoothed loss marked; `result` as
    `tfdeeplab.lr_finder.sweep` returns it."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    rates = result["learning_rates"]
    axes.plot(rates, result["losses"], alpha=0.3, label="loss per step")
    axes.plot(rates, result["smoothed_losses"], label="smoothed")
    for key, style in (("min_loss_lr", ":"), ("suggested_lr", "--")):
        value = result[key]
        axes.axvline(value, linestyle=style, color="k", label=f"{key} {value:.2g}")
    finite = [v for v in result["smoothed_losses"] if np.isfinite(v)]
    if finite:
        axes.set_ylim(top=min(max(finite), 4 * min(finite)) * 1.05)
    axes.set(xscale="log", xlabel="learning rate", ylabel="loss", title=title)
    axes.legend()
    return _save(figure, path)


def latency_bars(path, labels, mean_ms, p50_ms, p95_ms, title):
    """One horizontal bar per artifact (mean latency) with a p50–p95 whisker."""
    y = np.arange(len(labels))
    figure = Figure(figsize=(9, 1.2 + 0.45 * len(labels)), layout="constrained")
    axes = figure.subplots()
    axes.barh(y, mean_ms, color="tab:blue", alpha=0.8, label="mean")
    p50, p95 = np.asarray(p50_ms, float), np.asarray(p95_ms, float)
    axes.errorbar(
        (p50 + p95) / 2,
        y,
        xerr=(p95 - p50) / 2,
        fmt="none",
        ecolor="black",
        capsize=4,
        label="p50–p95",
    )
    axes.set_yticks(y, labels)
    axes.invert_yaxis()  # the first artifact on top, as in the table
    axes.set(xlabel="ms", title=title)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def class_iou_bars(path, class_names, series, title="IoU per class"):
    """Grouped bars of IoU (%) per class, one group per class, one bar per series.

    Args:
        series: {series name (e.g. a model): IoU per class in [0, 1] (NaN: not scored)}.
    """
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(class_names))
    figure = Figure(figsize=(max(6, 0.9 * len(class_names) + 2), 4), layout="constrained")
    axes = figure.subplots()
    for index, (name, ious) in enumerate(series.items()):
        values = 100 * np.asarray(ious, dtype=float)
        bars = axes.bar(x + (index - (len(series) - 1) / 2) * width, values, width, label=name)
        axes.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    axes.set_xticks(x, class_names, rotation=30, ha="right")
    axes.set(ylabel="IoU (%)", ylim=(0, 105), title=title)
    axes.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        axes.legend()
    return _save(figure, path)


def evaluation_chart(path, report):
    """`class_iou_bars` of an evaluation report (`tfdeeplab.inference.evaluate`)."""
    names = [row["name"] for row in report["classes"]]
    ious = [np.nan if row["iou"] is None else row["iou"] for row in report["classes"]]
    mean = "n/a" if report["mean_iou"] is None else f"{100 * report['mean_iou']:.1f}"
    title = f"IoU per class (mIoU {mean}, {report.get('images', '?')} images)"
    return class_iou_bars(path, names, {"IoU": ious}, title)


def prediction_grid(path, rows, titles, class_names, colours, ignore_colour=(255, 255, 255)):
    """Rows of RGB panels (e.g. image / ground truth / prediction; a row's panels share a size,
    the first row sets the figure's proportions) with column
    titles and a legend of the class colours.

    Args:
        rows: lists of (H, W, 3) arrays with values in [0, 255].
        colours: (num_classes, 3) uint8, the colours the masks are drawn in.
    """
    height, width = np.asarray(rows[0][0]).shape[:2]
    columns = len(rows[0])
    scale = 2.2 / max(height, width)
    figure = Figure(
        figsize=(columns * width * scale + 2.2, len(rows) * height * scale + 0.4),
        layout="constrained",
    )
    grid = np.atleast_2d(figure.subplots(len(rows), columns, squeeze=False))
    for row_axes, row in zip(grid, rows, strict=True):
        for axes, panel in zip(row_axes, row, strict=True):
            axes.imshow(np.clip(panel, 0, 255).astype(np.uint8), interpolation="nearest")
            axes.set_axis_off()
    for axes, title in zip(grid[0], titles, strict=True):
        axes.set_title(title)
    handles = [
        Patch(facecolor=np.asarray(colour) / 255, edgecolor="black", label=name)
        for name, colour in zip(class_names, colours, strict=True)
    ]
    handles.append(
        Patch(facecolor=np.asarray(ignore_colour) / 255, edgecolor="black", label="ignored")
    )
    figure.legend(handles=handles, loc="outside right upper", fontsize=8)
    return _save(figure, path)
