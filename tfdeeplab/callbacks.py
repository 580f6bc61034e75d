"""Training callbacks that Keras does not provide."""

import time
from pathlib import Path

import keras
import numpy as np

from tfdeeplab.atomic import atomic_output


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model as `.keras` when `monitor` improves, atomically.

    Keras' ModelCheckpoint writes straight to the target, so a kill mid-write leaves a corrupt
    file in place of the last good one; this writes a temporary file and renames it.

    Args:
        path: the `.keras` file.
        monitor: the logged value, e.g. "val_mean_iou".
        mode: "max" or "min".
        enabled: False on non-chief workers of a multi-worker run.
    """

    def __init__(self, path, monitor="val_mean_iou", mode="max", enabled=True):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r} is unknown; choose one of: max, min")
        self.path = Path(path)
        self.monitor = monitor
        self.mode = mode
        self.enabled = enabled
        self.best = -np.inf if mode == "max" else np.inf

    def _improved(self, value):
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            available = ", ".join(sorted(logs or {}))
            raise ValueError(f"monitor={self.monitor!r} is not logged; logged: {available}")
        if not self._improved(value):
            return
        self.best = float(value)
        if self.enabled:
            save_model_atomically(self.model, self.path)


def save_model_atomically(model, path):
    """`model.save(path)` through a temporary `.keras` file in the same folder and a rename."""
    with atomic_output(path, suffix=".keras") as temporary:
        model.save(temporary)
    return Path(path)


class BackboneFreezer(keras.callbacks.Callback):
    """Keeps the nested "backbone" frozen for the first `epochs` epochs, then trains it.

    The state is set at the start of every epoch from the epoch number alone, so a run resumed by
    BackupAndRestore gets the right state. Keras traces the train step with the trainable
    variables of that moment, so a change rebuilds the train function. The optimizer must have
    been built with the backbone trainable (see `tfdeeplab.training`) so that its slots exist.
    """

    def __init__(self, epochs, layer_name="backbone"):
        super().__init__()
        self.epochs = int(epochs)
        self.layer_name = layer_name

    def on_epoch_begin(self, epoch, logs=None):
        backbone = self.model.get_layer(self.layer_name)
        trainable = epoch >= self.epochs
        if backbone.trainable != trainable:
            backbone.trainable = trainable
            self.model.make_train_function(force=True)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after `minutes` of wall time (checked after every batch).

    With a `tfdeeplab.schedules.Replannable` schedule, the budget also shapes the schedule:
    after every epoch it measures the epoch's seconds per step (validation included) and
    re-plans the schedule's end at the step the remaining time will reach, so the learning
    rate has decayed when the budget stops the run; training also stops when the plan is done.
    The budget counts from the start of this `fit` call: a resumed run gets it anew, and its
    plan until its first epoch ends is the designed one.

    Attributes:
        planned_steps: the last plan (None without a schedule).
        steps_run: the optimizer's step count when training stopped.
        stopped_at_epoch: the epoch (from 0) the budget or the plan ended, or None.
    """

    def __init__(self, minutes, schedule=None):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.schedule = schedule
        self.stopped_at_epoch = None
        self.planned_steps = None
        self.steps_run = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()
        self.steps_run = int(self.model.optimizer.iterations.numpy())
        if self.schedule is not None:
            self.planned_steps = float(self.schedule.planned_steps.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = (time.monotonic(), self.steps_run)

    def on_train_batch_end(self, batch, logs=None):
        self.steps_run += 1
        over_time = time.monotonic() - self.start >= self.seconds
        if over_time or (self.planned_steps is not None and self.steps_run >= self.planned_steps):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            if self.stopped_at_epoch is None:
                self.stopped_at_epoch = epoch
            return
        started, steps = self._epoch
        now = time.monotonic()
        if self.schedule is not None and self.steps_run > steps:
            seconds_per_step = (now - started) / (self.steps_run - steps)
            remaining = self.seconds - (now - self.start)
            self.planned_steps = self.schedule.replan(
                self.steps_run + max(remaining, 0.0) / seconds_per_step
            )


class Throughput(keras.callbacks.Callback):
    """Training images per second over train batches only, leaving out the first batch of the
    run (tracing) and validation time."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = int(batch_size)
        self.seconds = 0.0
        self.batches = 0
        self._first = True

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._first:
            self._first = False
            return
        self.seconds += time.perf_counter() - self._start
        self.batches += 1

    @property
    def images_per_second(self):
        return self.batches * self.batch_size / self.seconds if self.seconds else None
