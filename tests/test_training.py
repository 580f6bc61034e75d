import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.helpers import free_ports
from tfdeeplab.schedules import OneCycle, PolyDecayWithWarmup, make_schedule
from tfdeeplab.training import RunExistsError, TrainConfig, train

TINY = {
    "alpha": 0.35,
    "aspp_filters": 16,
    "image_size": 48,
    "batch_size": 4,
    "optimizer": "adamw",
    "lr": 2e-3,
    "val_fraction": 0.25,
    "verbose": 0,
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from tfdeeplab.data import synthetic_scenes

    return synthetic_scenes(tmp_path_factory.mktemp("scenes"), 16, 48, 4, seed=1)


def _config(scenes, out, **kwargs):
    return TrainConfig(data=str(scenes), out=str(out), **{**TINY, **kwargs})


def _history(out):
    with open(out / "history.csv") as file:
        return list(csv.DictReader(file))


def test_poly_schedule_with_warmup():
    schedule = PolyDecayWithWarmup(0.1, decay_steps=110, warmup_steps=10, power=0.9)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(9)) == pytest.approx(0.1)
    assert float(schedule(60)) == pytest.approx(0.1 * 0.5**0.9)
    assert float(schedule(110)) == pytest.approx(0.0)
    restored = PolyDecayWithWarmup.from_config(schedule.get_config())
    assert float(restored(60)) == pytest.approx(float(schedule(60)))


def test_one_cycle_rises_to_its_peak_then_anneals_to_its_floor():
    schedule = OneCycle(0.1, total_steps=101, pct_start=0.3)
    assert float(schedule(0)) == pytest.approx(0.1 / 25)
    assert float(schedule(15)) == pytest.approx((0.1 + 0.1 / 25) / 2, rel=1e-4)
    assert float(schedule(30)) == pytest.approx(0.1)
    assert float(schedule(65)) == pytest.approx((0.1 + 0.1 / 25e4) / 2, rel=1e-4)
    assert float(schedule(100)) == pytest.approx(0.1 / 25e4, rel=1e-3)
    assert float(schedule(500)) == pytest.approx(0.1 / 25e4, rel=1e-3)
    restored = OneCycle.from_config(schedule.get_config())
    assert float(restored(42)) == pytest.approx(float(schedule(42)))
    with pytest.raises(ValueError, match=r"pct_start=1\.5"):
        OneCycle(0.1, 100, pct_start=1.5)


def test_schedule_names_pick_their_schedules():
    poly = make_schedule("poly", 0.01, 100, warmup_steps=10)
    assert isinstance(poly, PolyDecayWithWarmup) and poly.warmup_steps == 10
    cosine = make_schedule("cosine", 0.01, 100, warmup_steps=10)
    assert float(cosine(10)) == pytest.approx(0.01)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(make_schedule("cosine", 0.01, 100)(0)) == pytest.approx(0.01)
    assert isinstance(make_schedule("one-cycle", 0.01, 100), OneCycle)
    with pytest.raises(ValueError, match="'step'"):
        make_schedule("step", 0.01, 100)


def test_training_lowers_the_loss_and_writes_the_run_folder(scenes, tmp_path):
    summary = train(_config(scenes, tmp_path, epochs=6, steps_per_epoch=6, warmup_epochs=1))
    losses = [float(row["loss"]) for row in _history(tmp_path)]
    assert losses[-1] < 0.75 * losses[0], losses
    for name in ("best.keras", "final.keras", "config.json", "training_curve.png", "summary.json"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert summary["epochs_run_this_time"] == 6 and summary["train_images"] == 12
    model = keras.saving.load_model(summary["final_model"])
    assert model.get_layer("backbone").get_layer("bn_Conv1").momentum == 0.9  # not 0.999
    assert summary["train_images_per_second"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    with pytest.raises(RunExistsError, match="holds a finished run"):
        train(_config(scenes, tmp_path, epochs=1))
    assert train(_config(scenes, tmp_path, epochs=1, steps_per_epoch=1, overwrite=True))


class _Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("killed")


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(scenes, tmp_path):
    config = _config(scenes, tmp_path, epochs=3, steps_per_epoch=2)
    with pytest.raises(RuntimeError, match="killed"):
        train(config, callbacks=[_Kill()])
    assert not (tmp_path / "summary.json").exists()
    summary = train(config)
    assert summary["resumed"] and summary["epochs_run_this_time"] == 1
    assert [int(row["epoch"]) for row in _history(tmp_path)] == [0, 1, 2]


class _Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.kernels = []

    def _take(self):
        layer = self.model.get_layer("backbone").get_layer("Conv1")
        self.kernels.append(layer.kernel.numpy().copy())

    def on_train_begin(self, logs=None):
        self._take()

    def on_epoch_end(self, epoch, logs=None):
        self._take()


@pytest.mark.slow
def test_backbone_is_frozen_for_the_first_epochs(scenes, tmp_path):
    snapshots = _Snapshots()
    config = _config(scenes, tmp_path, epochs=2, steps_per_epoch=2, freeze_backbone_epochs=1)
    train(config, callbacks=[snapshots])
    before, after_frozen, after_free = snapshots.kernels
    np.testing.assert_array_equal(before, after_frozen)
    assert not np.allclose(after_frozen, after_free)


@pytest.mark.parametrize("has_bfloat16", [True, False, None])
def test_mixed_precision_warns_on_cpus_that_emulate_bfloat16(monkeypatch, has_bfloat16):
    import warnings

    from tfdeeplab import strategy

    monkeypatch.setattr(strategy, "cpu_has_bfloat16", lambda: has_bfloat16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with strategy.dtype_policy(True):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
    slow = [w for w in caught if "without bfloat16 instructions" in str(w.message)]
    assert len(slow) == (1 if has_bfloat16 is False else 0)
    assert keras.config.dtype_policy().name == "float32"


def test_early_stopping_watches_val_miou_and_keeps_the_best_weights(tmp_path):
    from tfdeeplab.training import training_callbacks

    config = TrainConfig(
        data="data", out=str(tmp_path), early_stopping=True, patience=3, min_delta=0.01
    )
    (stopping,) = [c for c in training_callbacks(config, tmp_path)["all"] if _is_stopping(c)]
    assert (stopping.monitor, stopping.patience, stopping.min_delta) == ("val_mean_iou", 3, 0.01)
    assert stopping.mode == "max" and stopping.restore_best_weights
    assert (
        training_callbacks(TrainConfig(data="data", out=str(tmp_path)), tmp_path)["early_stopping"]
        is None
    )
    with pytest.raises(ValueError, match="patience=-1"):
        TrainConfig(data="data", out=str(tmp_path), patience=-1)


def test_paths_are_kept_as_strings_for_the_run_files(tmp_path):
    config = TrainConfig(data=tmp_path / "data", out=tmp_path / "run")
    assert (config.data, config.out) == (str(tmp_path / "data"), str(tmp_path / "run"))


def _is_stopping(callback):
    return isinstance(callback, keras.callbacks.EarlyStopping)


@pytest.mark.slow
def test_early_stopping_stops_and_restores_the_best_epoch(scenes, tmp_path):
    kernels = []

    class Kernels(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels.append(self.model.get_layer("classifier").get_weights()[0].copy())

    # min_delta 1 (a whole mIoU): only the first epoch counts as a gain, so with patience 1
    # the run stops after its second epoch and ends with the first epoch's weights.
    stopping = {"early_stopping": True, "patience": 1, "min_delta": 1.0}
    config = _config(scenes, tmp_path, epochs=4, steps_per_epoch=2, **stopping)
    summary = train(config, callbacks=[Kernels()])
    assert summary["epochs_run_this_time"] == 2
    assert summary["stopped_early_at_epoch"] == 1
    first, second = kernels
    assert not np.allclose(first, second)  # training moved the weights...
    final = keras.saving.load_model(summary["final_model"])
    np.testing.assert_array_equal(final.get_layer("classifier").get_weights()[0], first)


@pytest.mark.slow
def test_mixed_precision_trains_with_float32_logits(scenes, tmp_path):
    summary = train(_config(scenes, tmp_path, epochs=1, steps_per_epoch=2, mixed_precision=True))
    model = keras.saving.load_model(summary["final_model"])
    assert model.get_layer("aspp").dtype_policy.name == "mixed_bfloat16"
    assert model.output.dtype == "float32"
    assert np.isfinite(float(_history(tmp_path)[0]["loss"]))
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.slow
def test_two_multiworker_processes_end_with_identical_weights(scenes, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [
        sys.executable, "-m", "tfdeeplab.cli", "train", "--data", str(scenes),
        "--out", str(tmp_path), "--distribute", "multiworker", "--epochs", "1",
        "--steps-per-epoch", "3", "--alpha", "0.35", "--aspp-filters", "16",
        "--image-size", "32", "--batch-size", "4", "--optimizer", "adamw",
        "--val-fraction", "0.25",
    ]  # fmt: skip
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}
        processes.append(
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    chief = keras.saving.load_model(tmp_path / "final.keras")
    other = keras.saving.load_model(tmp_path / "worker_1" / "final.keras")
    for a, b in zip(chief.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    initial = keras.saving.load_model(tmp_path / "best.keras")  # written after epoch 1 too
    assert any(w.size for w in initial.get_weights())
    assert not (tmp_path / "worker_1" / "best.keras").exists()  # only the chief checkpoints


def _small_model():
    from tfdeeplab import DeepLabV3

    return DeepLabV3(3, "mobilenetv2", alpha=0.35, aspp_filters=8, pointrend=True)


def test_sgd_weight_decay_is_coupled_l2_on_kernels_only(tmp_path):
    from tfdeeplab.training import kernel_variables, make_optimizer

    model = _small_model()
    config = TrainConfig(data=".", out=str(tmp_path), optimizer="sgd", weight_decay=1e-4)
    optimizer = make_optimizer(config, 0.01, model)
    assert optimizer.weight_decay is None  # no decoupled decay of every variable
    kernels = kernel_variables(model)
    names = {v.path for v in kernels}
    assert any("depthwise" in n for n in names) and any("point_head" in n for n in names)
    assert not any("gamma" in n or "beta" in n or "bias" in n for n in names)
    expected = 1e-4 / 2 * sum(float(np.sum(np.square(v.numpy()))) for v in kernels)
    assert float(keras.ops.sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    # The gradient of the regularization is weight_decay·W, torchvision's SGD weight decay.
    kernel = kernels[0]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        total = keras.ops.sum(model.losses)
    np.testing.assert_allclose(tape.gradient(total, kernel), 1e-4 * kernel.numpy(), rtol=1e-5)


def test_adamw_decays_kernels_but_not_batchnorm_or_biases(tmp_path):
    from tfdeeplab.training import kernel_variables, make_optimizer

    model = _small_model()
    config = TrainConfig(data=".", out=str(tmp_path), optimizer="adamw", weight_decay=0.5)
    optimizer = make_optimizer(config, 0.1, model)
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    # Zero gradients: Adam's own step is nil, only the decoupled decay moves weights.
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
    kernels = {id(v) for v in kernel_variables(model)}
    for variable, old in zip(variables, before, strict=True):
        moved = not np.allclose(variable.numpy(), old)
        assert moved == (id(variable) in kernels and bool(np.any(old))), variable.path
