"""The learning-rate range test on a problem whose answer is known: gradient descent on
(w − 1)², which shrinks the error while the rate is below 1 and diverges above it."""

import json

import keras
import numpy as np
import pytest

from tfdeeplab.lr_finder import LearningRateSweep, suggest_learning_rate, sweep, write_sweep


def _quadratic():
    # float64: near rate 0.5 the error shrinks to 4e-12, below float32's resolution of w = 1.
    inputs = keras.Input((1,), dtype="float64")
    dense = keras.layers.Dense(1, use_bias=False, dtype="float64")
    model = keras.Model(inputs, dense(inputs))
    dense.kernel.assign([[0.0]])
    loss = keras.losses.MeanSquaredError(dtype="float64")  # (w·1 − 1)², gradient 2(w − 1)
    model.compile(keras.optimizers.SGD(0.1), loss)
    return model, np.ones((1, 1), "float64")


def test_the_sweep_records_each_steps_loss_and_stops_when_the_loss_diverges():
    import tensorflow as tf

    model, ones = _quadratic()
    dataset = tf.data.Dataset.from_tensors((ones, ones)).repeat()
    result = sweep(model, dataset, steps=100, min_lr=1e-3, max_lr=10.0, progress=False)
    # The same descent by hand: loss_k = (w_k − 1)², then w ← w − lr_k · 2(w_k − 1).
    w, expected = 0.0, []
    for rate in result["learning_rates"]:
        expected.append((w - 1) ** 2)
        w -= rate * 2 * (w - 1)
    np.testing.assert_allclose(result["losses"], expected, rtol=1e-3, atol=1e-12)
    assert result["learning_rates"][0] == pytest.approx(1e-3)
    ratios = np.diff(np.log(result["learning_rates"]))
    np.testing.assert_allclose(ratios, np.log(1e4) / 99, rtol=1e-6)  # exponential steps
    # The error grows only once a step overshoots by more than it corrects: rate > 1.
    assert result["steps_run"] < 100 and result["learning_rates"][-1] > 1.0
    # The best constant rate here is 0.5 (one step to the minimum); the suggestion (0.63) is
    # within 2× of it, and below the divergence at 1.
    assert 0.25 < result["suggested_lr"] < 1.0 and result["steepest_lr"] < 1.0


def test_suggestion_is_a_tenth_of_the_rate_at_the_lowest_smoothed_loss():
    rates = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    result = suggest_learning_rate(rates, [5.0, 4.0, 2.0, 1.0, 9.0])
    assert result["min_loss_lr"] == 0.1 and result["suggested_lr"] == pytest.approx(0.01)
    assert result["steepest_lr"] in (1e-3, 1e-2)


def test_sweep_writes_its_curve(tmp_path):
    import tensorflow as tf

    model, ones = _quadratic()
    dataset = tf.data.Dataset.from_tensors((ones, ones)).repeat()
    result = sweep(model, dataset, steps=40, min_lr=1e-3, max_lr=10.0)
    assert result["steps_run"] == len(result["losses"]) <= 40
    json_path, png = write_sweep(result, tmp_path)
    assert json_path.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_bad_ranges_are_named():
    with pytest.raises(ValueError, match=r"min_lr=1\.0 and max_lr=0\.1"):
        LearningRateSweep(10, min_lr=1.0, max_lr=0.1)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from tfdeeplab.data import synthetic_scenes

    return synthetic_scenes(tmp_path_factory.mktemp("scenes"), 12, 48, 3, seed=2)


TINY = [
    "--alpha", "0.35", "--aspp-filters", "8", "--image-size", "48", "--batch-size", "4",
    "--val-fraction", "0.25",
]  # fmt: skip


def test_lr_find_command_writes_the_curve_and_suggests_a_rate(scenes, tmp_path, capsys):
    from tfdeeplab.cli import main

    argv = ["lr-find", "--data", str(scenes), "--out", str(tmp_path), *TINY]
    assert main([*argv, "--sweep-steps", "12", "--min-lr", "1e-4", "--max-lr", "10"]) == 0
    result = json.loads((tmp_path / "lr_find.json").read_text())
    assert 1 < result["steps_run"] <= 12 and result["learning_rates"][0] == pytest.approx(1e-4)
    assert (tmp_path / "lr_find.png").exists()
    assert "Suggested learning rate" in capsys.readouterr().out


@pytest.mark.slow
def test_train_with_lr_auto_trains_at_the_suggested_rate(scenes, tmp_path):
    from tfdeeplab.training import TrainConfig, train

    config = TrainConfig(
        data=str(scenes), out=str(tmp_path), alpha=0.35, aspp_filters=8, image_size=48,
        batch_size=4, val_fraction=0.25, epochs=1, steps_per_epoch=2, lr="auto", verbose=0,
    )  # fmt: skip
    summary = train(config)
    found = json.loads((tmp_path / "lr_find.json").read_text())
    assert summary["learning_rate"] == pytest.approx(found["suggested_lr"])
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == "auto"
