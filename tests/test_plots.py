"""The PNG charts: what they show, read back from the figures and the files."""

import numpy as np
import pytest
from PIL import Image

from tfdeeplab import plots


@pytest.fixture
def figures(monkeypatch):
    """Each chart's matplotlib figure, kept as it is saved."""
    saved = []
    original = plots._save

    def keep(figure, path):
        saved.append(figure)
        return original(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_training_curves_count_whole_epochs_from_one(tmp_path, figures):
    history_csv = tmp_path / "history.csv"
    lines = ["epoch,loss,mean_iou,val_loss,val_mean_iou"]
    lines += [f"{e},{2 - 0.1 * e},{0.1 * e},{2.1 - 0.1 * e},{0.09 * e}" for e in range(9)]
    history_csv.write_text("\n".join(lines) + "\n")
    history = plots.read_history(history_csv)
    np.testing.assert_allclose(history["loss"], [2 - 0.1 * e for e in range(9)])

    path = plots.training_curves(tmp_path / "curve.png", history)
    loss, miou = figures[0].axes
    for axes in (loss, miou):
        ticks = [t for t in axes.get_xticks() if 1 <= t <= 9]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert [line.get_xdata().tolist() for line in axes.get_lines()] == [list(range(1, 10))] * 2
    assert [t.get_text() for t in loss.get_legend().get_texts()] == [
        "training loss",
        "validation loss",
    ]
    assert Image.open(path).size == (1000, 400)


def test_a_history_with_an_empty_cell_reads_as_nan(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,1.5,\n1,1.2,1.3\n")
    history = plots.read_history(path)
    assert np.isnan(history["val_loss"][0]) and history["val_loss"][1] == 1.3


def test_latency_bars_put_each_artifact_on_its_own_labelled_row(tmp_path, figures):
    labels = ["run/model.keras (Keras fp32)", "run/model_int8.tflite (TFLite int8)"]
    plots.latency_bars(tmp_path / "latency.png", labels, [30.0, 9.0], [29, 8.5], [33, 10], "t")
    axes = figures[0].axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == labels
    widths = [bar.get_width() for bar in axes.patches]
    assert widths == [30.0, 9.0]


def test_class_iou_bars_and_prediction_grid_with_a_legend(tmp_path, figures):
    names = ["background", "disc", "ring"]
    plots.class_iou_bars(tmp_path / "iou.png", names, {"a": [0.9, 0.5, np.nan], "b": [1, 0, 0.2]})
    axes = figures[0].axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == names
    heights = [bar.get_height() for bar in axes.patches]
    np.testing.assert_allclose(heights, [90, 50, np.nan, 100, 0, 20])

    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    image = np.full((20, 30, 3), 100.0)
    rows = [[image, colours[np.zeros((20, 30), int)], colours[np.ones((20, 30), int)]]] * 2
    path = plots.prediction_grid(
        tmp_path / "grid.png", rows, ("image", "truth", "pred"), names, colours
    )
    legend = figures[1].legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [*names, "ignored"]
    assert [axes.get_title() for axes in figures[1].axes[:3]] == ["image", "truth", "pred"]
    assert Image.open(path).format == "PNG"
