"""The learning-rate range test (Smith, arXiv:1506.01186 section 3.3; fastai's `lr_find`):
train for a few hundred steps while the learning rate rises exponentially, record the loss
of every step, stop once it diverges, and suggest a rate below the one where the smoothed loss
bottoms out.
"""

import json
import math

import keras
import numpy as np

from tfdeeplab.atomic import atomic_write_bytes


class LearningRateSweep:
    """The rates of the test and the losses recorded at them: rate k of `steps` is
    min_lr · (max_lr / min_lr)^(k / (steps − 1)); `record` takes each step's loss and says
    whether to stop (the smoothed loss past `divergence` × its lowest value, or not finite).

    Attributes:
        learning_rates, losses: per step; smoothed: their exponential moving average
            (`beta`, bias-corrected, as fastai's).
    """

    def __init__(self, steps, min_lr=1e-6, max_lr=1.0, divergence=4.0, beta=0.98):
        if not 0 < min_lr < max_lr or steps < 2:
            raise ValueError(
                f"min_lr={min_lr} and max_lr={max_lr} must satisfy 0 < min_lr < max_lr, and "
                f"steps={steps} must be ≥ 2"
            )
        self.steps, self.min_lr, self.max_lr = int(steps), float(min_lr), float(max_lr)
        self.divergence, self.beta = float(divergence), float(beta)
        self.learning_rates, self.losses, self.smoothed = [], [], []
        self._average = 0.0

    def rate(self, step):
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.steps - 1))

    def record(self, loss):
        """Records the loss of the step at the next rate; True when the test should stop."""
        step = len(self.losses)
        self.learning_rates.append(self.rate(step))
        self.losses.append(float(loss))
        self._average = self.beta * self._average + (1 - self.beta) * float(loss)
        self.smoothed.append(self._average / (1 - self.beta ** (step + 1)))
        diverged = not math.isfinite(loss) or self.smoothed[-1] > self.divergence * min(
            self.smoothed
        )
        return diverged or step + 1 >= self.steps


def suggest_learning_rate(learning_rates, smoothed):
    """{"suggested_lr": a tenth of the rate at the lowest smoothed loss (fastai's `lr_min`),
    "min_loss_lr", "steepest_lr": where the smoothed loss falls fastest per log-rate}."""
    rates = np.asarray(learning_rates, np.float64)
    smoothed = np.asarray(smoothed, np.float64)
    finite = np.isfinite(smoothed)
    rates, smoothed = rates[finite], smoothed[finite]
    lowest = int(np.argmin(smoothed))
    slopes = np.gradient(smoothed, np.log(rates)) if len(rates) > 1 else np.zeros(1)
    # The first tenth of the sweep is left out of the steepest descent: the average of a few
    # noisy losses swings there (a sweep on the demo's data put it at its first rate, 1e-6).
    first = min(len(rates) // 10, lowest)
    return {
        "suggested_lr": float(rates[lowest] / 10),
        "min_loss_lr": float(rates[lowest]),
        "steepest_lr": float(rates[first + int(np.argmin(slopes[first : lowest + 1]))]),
    }


def sweep(model, dataset, steps=200, min_lr=1e-6, max_lr=1.0, progress=True):
    """Runs the range test on a compiled `model` (its weights change: use a fresh model) with a
    repeating `dataset` of (x, y) batches, one `train_on_batch` per rate (its loss is that
    batch's alone); returns the curve and the suggestion. The optimizer must take a plain
    learning rate, not a schedule."""
    recorder = LearningRateSweep(steps, min_lr, max_lr)
    bar = keras.utils.Progbar(steps, unit_name="step") if progress else None
    for step, (x, y) in enumerate(dataset):
        model.optimizer.learning_rate = recorder.rate(step)
        loss = model.train_on_batch(x, y, return_dict=True)["loss"]
        stop = recorder.record(float(loss))
        if bar is not None:
            bar.update(step + 1, [("lr", recorder.rate(step)), ("loss", float(loss))])
        if stop:
            break
    return {
        "learning_rates": recorder.learning_rates,
        "losses": recorder.losses,
        "smoothed_losses": recorder.smoothed,
        "steps_run": len(recorder.losses),
        **suggest_learning_rate(recorder.learning_rates, recorder.smoothed),
    }


def write_sweep(result, out, title="Learning-rate range test"):
    """lr_find.json and lr_find.png (loss against learning rate, the suggestion marked) in
    `out`; returns their paths."""
    from tfdeeplab.plots import lr_sweep_chart

    json_path = out / "lr_find.json"
    atomic_write_bytes(json_path, json.dumps(result, indent=2).encode())
    return json_path, lr_sweep_chart(out / "lr_find.png", result, title)
