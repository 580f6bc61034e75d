"""Learning-rate schedules."""

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
