"""Learning-rate schedules."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfdeeplab")
class PolyDecayWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """DeepLab's "poly" policy, lr · (1 - step / decay_steps)^power, after a linear warm-up.

    The decay is Keras' `PolynomialDecay`; this adds the warm-up that it lacks.

    Args:
        initial_learning_rate: the rate reached at the end of the warm-up.
        decay_steps: total training steps (warm-up included).
        warmup_steps: steps of linear warm-up from initial_learning_rate / warmup_steps.
        end_learning_rate: the rate at `decay_steps`.
        power: 0.9 in the DeepLab papers.
    """

    def __init__(
        self, initial_learning_rate, decay_steps, warmup_steps=0, end_learning_rate=0.0, power=0.9
    ):
        if decay_steps <= warmup_steps:
            raise ValueError(f"decay_steps={decay_steps} must exceed warmup_steps={warmup_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.warmup_steps = int(warmup_steps)
        self.end_learning_rate = float(end_learning_rate)
        self.power = float(power)
        self._decay = keras.optimizers.schedules.PolynomialDecay(
            initial_learning_rate,
            decay_steps - warmup_steps,
            end_learning_rate=end_learning_rate,
            power=power,
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if not self.warmup_steps:
            return self._decay(step)
        warm = self.initial_learning_rate * (step + 1) / self.warmup_steps
        return ops.where(step < self.warmup_steps, warm, self._decay(step - self.warmup_steps))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
        }


@keras.saving.register_keras_serializable(package="tfdeeplab")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle policy (Smith & Topin, arXiv:1708.07120) with cosine phases, as fastai
    and torch's `OneCycleLR` default to: from max_lr / div_factor up to max_lr over the first
    `pct_start` of the steps, then down to max_lr / (div_factor · final_div_factor).
    Only the learning rate cycles; momentum stays as the optimizer sets it.

    Args:
        max_learning_rate: the peak.
        total_steps: steps of the whole cycle; later steps keep the final rate.
        pct_start: share of the steps spent rising.
        div_factor: max / initial rate.
        final_div_factor: initial / final rate.
    """

    def __init__(
        self, max_learning_rate, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4
    ):
        if total_steps < 2 or not 0 < pct_start < 1:
            raise ValueError(
                f"total_steps={total_steps} must be ≥ 2 and pct_start={pct_start} in (0, 1)"
            )
        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        initial = self.max_learning_rate / self.div_factor
        final = initial / self.final_div_factor
        rise = max(1.0, self.pct_start * (self.total_steps - 1))
        fall = max(1.0, self.total_steps - 1 - rise)

        def cosine(start, end, fraction):
            fraction = ops.clip(fraction, 0.0, 1.0)
            return end + (start - end) * (1 + ops.cos(math.pi * fraction)) / 2

        rising = cosine(initial, self.max_learning_rate, step / rise)
        falling = cosine(self.max_learning_rate, final, (step - rise) / fall)
        return ops.where(step < rise, rising, falling)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


@keras.saving.register_keras_serializable(package="tfdeeplab")
class Replannable(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule`, designed over `total_steps`, run over `planned_steps` instead: after the
    warm-up (kept in steps), step s of the plan reads the designed schedule at
    warmup + (s − warmup) · (total − warmup) / (planned − warmup), so the designed schedule
    reaches its end at the planned step. `replan` moves the end while training runs, e.g. to
    where a time budget will stop it (`tfdeeplab.callbacks.TimeBudget`).

    Args:
        schedule: a LearningRateSchedule that holds its final rate after `total_steps`.
        total_steps: the steps `schedule` was designed for; a plan never exceeds them.
        warmup_steps: the designed schedule's warm-up, which a plan does not shorten.
        planned_steps: the initial plan; default `total_steps`.
    """

    def __init__(self, schedule, total_steps, warmup_steps=0, planned_steps=None):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.planned_steps = keras.Variable(
            float(planned_steps or total_steps), dtype="float32", trainable=False
        )

    def replan(self, steps):
        """Plans the end at `steps` (kept past the warm-up and at most `total_steps`);
        returns the plan."""
        planned = min(float(self.total_steps), max(float(steps), self.warmup_steps + 1.0))
        self.planned_steps.assign(planned)
        return planned

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        stretch = (self.total_steps - warmup) / ops.maximum(self.planned_steps - warmup, 1.0)
        return self.schedule(ops.where(step < warmup, step, warmup + (step - warmup) * stretch))

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "planned_steps": float(ops.convert_to_numpy(self.planned_steps)),
        }


SCHEDULES = ("poly", "cosine", "one-cycle")


def make_schedule(name, learning_rate, total_steps, warmup_steps=0, replannable=False):
    """The learning-rate schedule `name` ("poly", "cosine" or "one-cycle") over `total_steps`.

    poly: DeepLab's, after a linear warm-up of `warmup_steps`. cosine: Keras' `CosineDecay` to
    0, after the same warm-up. one-cycle: `OneCycle` (its own warm-up phase; `warmup_steps`
    is not used). With `replannable`, wrapped in `Replannable` so that a time budget can move
    its end.
    """
    total_steps = max(int(total_steps), int(warmup_steps) + 1, 2)
    if replannable:
        schedule = make_schedule(name, learning_rate, total_steps, warmup_steps)
        warmup = 0 if name == "one-cycle" else int(warmup_steps)
        return Replannable(schedule, total_steps, warmup)
    if name == "poly":
        return PolyDecayWithWarmup(learning_rate, total_steps, int(warmup_steps))
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            0.0,
            total_steps - int(warmup_steps),
            warmup_target=learning_rate,
            warmup_steps=int(warmup_steps),
        )
    if name == "one-cycle":
        return OneCycle(learning_rate, total_steps)
    raise ValueError(f"schedule={name!r} is unknown; choose one of: {', '.join(SCHEDULES)}")
