"""A time budget stops training and shapes the schedule so that it ends where the budget does."""

import types

import keras
import numpy as np
import pytest

from tfdeeplab import callbacks
from tfdeeplab.callbacks import TimeBudget
from tfdeeplab.schedules import PolyDecayWithWarmup, Replannable, make_schedule
from tfdeeplab.training import TrainConfig, learning_rate_schedule


def test_a_replanned_schedule_ends_at_the_plan_and_keeps_its_warmup():
    designed = PolyDecayWithWarmup(0.1, 100, warmup_steps=10, power=1.0)
    schedule = Replannable(designed, 100, warmup_steps=10)
    assert float(schedule(50)) == pytest.approx(float(designed(50)))  # planned = designed
    assert schedule.replan(55) == 55
    assert float(schedule(4)) == pytest.approx(float(designed(4)))  # warm-up untouched
    assert float(schedule(10)) == pytest.approx(0.1)
    # Halfway through the shortened decay (step 32.5) is halfway through the designed one (55).
    assert float(schedule(32.5)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(55)) == pytest.approx(0.0, abs=1e-7)
    assert float(schedule(80)) == pytest.approx(0.0, abs=1e-7)
    # A plan never runs past the design, nor ends inside the warm-up.
    assert schedule.replan(1000) == 100 and schedule.replan(3) == 11


def test_a_replanned_schedule_survives_serialization():
    schedule = make_schedule("cosine", 0.01, 200, warmup_steps=20, replannable=True)
    schedule.replan(120)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, Replannable)
    for step in (0, 19, 20, 70, 119, 150):
        assert float(restored(step)) == pytest.approx(float(schedule(step)), abs=1e-9)
    assert float(restored(120)) == pytest.approx(0.0, abs=1e-9)


def test_one_cycle_is_replanned_as_a_whole():
    schedule = make_schedule("one-cycle", 0.1, 100, warmup_steps=10, replannable=True)
    assert schedule.warmup_steps == 0  # one-cycle's rise is a share of its steps
    schedule.replan(50)
    assert float(schedule(15)) == pytest.approx(0.1, rel=1e-3)  # peak at 30% of the plan


def test_only_a_budgeted_run_gets_a_replannable_schedule():
    config = TrainConfig(data="d", out="o", epochs=10, warmup_epochs=1)
    assert isinstance(learning_rate_schedule(config, 20), PolyDecayWithWarmup)
    budgeted = TrainConfig(data="d", out="o", epochs=10, warmup_epochs=1, time_budget_minutes=2)
    schedule = learning_rate_schedule(budgeted, 20)
    assert isinstance(schedule, Replannable)
    assert (schedule.total_steps, schedule.warmup_steps) == (200, 20)


class _Clock(keras.callbacks.Callback):
    """A fake clock that advances `seconds_per_step` before every batch."""

    def __init__(self, seconds_per_step, first_step_seconds):
        super().__init__()
        self.now = 0.0
        self.costs = [first_step_seconds]
        self.seconds_per_step = seconds_per_step

    def on_train_batch_begin(self, batch, logs=None):
        self.now += self.costs.pop() if self.costs else self.seconds_per_step


def _fit(monkeypatch, epochs, minutes, first_step_seconds=1.0, replannable=True):
    clock = _Clock(1.0, first_step_seconds)
    monkeypatch.setattr(callbacks, "time", types.SimpleNamespace(monotonic=lambda: clock.now))
    schedule = make_schedule("poly", 0.1, epochs * 5, warmup_steps=0, replannable=replannable)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(schedule), "mse")
    budget = TimeBudget(minutes, schedule if replannable else None)
    x = np.ones((20, 2), "float32")
    model.fit(x, x[:, :1], batch_size=4, epochs=epochs, callbacks=[clock, budget], verbose=0)
    return model, budget, schedule


def test_the_budget_plans_the_end_of_the_schedule_from_the_measured_step_time(monkeypatch):
    # 5 steps an epoch, 1 s a step, 30 s: the first epoch (5 s) plans 5 + 25 = 30 of 500 steps.
    model, budget, schedule = _fit(monkeypatch, epochs=100, minutes=0.5)
    assert budget.planned_steps == 30 and budget.steps_run == 30
    assert int(model.optimizer.iterations.numpy()) == 30
    assert budget.stopped_at_epoch == 5
    # The last step ran at (1/30)^0.9 of the peak, 0.047: annealed, not at its peak.
    assert float(schedule(29)) < 0.05 * float(schedule(0))
    assert float(schedule(30)) == pytest.approx(0.0, abs=1e-6)


def test_a_slow_first_epoch_is_corrected_by_the_next_plans(monkeypatch):
    # The first step costs 6 s (tracing): epoch 0 takes 10 s, so it plans 5 + 20 / 2 = 15 steps;
    # epoch 1 measures 1 s a step and plans 10 + 15 = 25, and the run ends at 30 s, step 25.
    _, budget, _ = _fit(monkeypatch, epochs=100, minutes=0.5, first_step_seconds=6.0)
    assert budget.planned_steps == 25 and budget.steps_run == 25


def test_without_a_schedule_the_budget_only_stops(monkeypatch):
    _, budget, schedule = _fit(monkeypatch, epochs=100, minutes=0.5, replannable=False)
    assert budget.planned_steps is None and budget.steps_run == 30
    assert float(schedule(29)) > 0.9 * float(schedule(0))  # what a budget did before
