"""tfdeeplab's training rows of `benchmarks.training`, one per subprocess (a `worker` target).

Each row adds one thing to the one before, so the differences between rows say where `fit`'s
time goes (the profile the README and RESULTS.md quote):

- "step, space-to-batch atrous": `train_on_batch` on tensors, with every atrous layer on Keras'
  space-to-batch formulation (the training path before native dilated kernels);
- "step": `train_on_batch` on tensors, with the kernels the capability check chose;
- "fit, in-memory batch": `model.fit` on one batch repeated (Keras' loop, no input work);
- "fit, tf.data pipeline": `model.fit` on the augmented folder pipeline `train` builds;
- "fit as train runs it": that, plus `train`'s metrics, kernel weight decay and callbacks
  (checkpoint backup, CSV log, TensorBoard, NaN guard, throughput; not the best-model
  checkpoint, which needs validation), with one epoch end;
- "step, mixed precision": the "step" row under Keras' mixed_float16 policy;
- "tf.data pipeline alone": batches of that pipeline with no training beside it.
"""

import dataclasses
import tempfile
import time

import numpy as np

from benchmarks.stats import summarize, time_steps
from benchmarks.worker import set_tf_threads

SPACE_TO_BATCH = "step, space-to-batch atrous"
STEP = "step"
FIT_MEMORY = "fit, in-memory batch"
FIT_PIPELINE = "fit, tf.data pipeline"
FIT_TRAIN = "fit as train runs it"
MIXED = "step, mixed precision"
PIPELINE = "tf.data pipeline alone"
KERAS_ROWS = (SPACE_TO_BATCH, STEP, FIT_MEMORY, FIT_PIPELINE, FIT_TRAIN, MIXED)


def _config(job, out):
    from tfdeeplab.config import TrainConfig

    return TrainConfig(
        data=job["data"],
        out=out,
        backbone=job["backbone"],
        output_stride=job["output_stride"],
        alpha=job["alpha"],
        image_size=job["image_size"],
        batch_size=job["batch"],
        epochs=1,
        steps_per_epoch=job["steps"],
        lr=0.01,
        verbose=0,
    )


def _model(job):
    import keras

    from tfdeeplab import DeepLabV3
    from tfdeeplab.losses import SegmentationLoss

    model = DeepLabV3(
        job["num_classes"],
        backbone=job["backbone"],
        output_stride=job["output_stride"],
        alpha=job["alpha"],
        crop_size=job["image_size"],
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), SegmentationLoss(job["num_classes"]))
    return model


def _batch(tf, job):
    rng = np.random.default_rng(0)
    size, batch = job["image_size"], job["batch"]
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, job["num_classes"], (batch, size, size)).astype("int32")
    return tf.constant(images), tf.constant(labels)


def _pipeline(job):
    """The augmented, repeating pipeline over the folder's train split, as `train` makes it."""
    from tfdeeplab.data import make_dataset, scan_split

    folder = scan_split(job["data"], "train")
    size = (job["image_size"], job["image_size"])
    return make_dataset(folder, size, job["batch"], augment=True, seed=0, repeat=True)


def _fit_clock():
    """A Keras callback that keeps when `fit` began and ended its loop and every train batch's
    seconds, begin to end."""
    import keras

    class FitClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_train_begin(self, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

        def on_train_end(self, logs=None):
            self.ended = time.perf_counter()

    return FitClock()


def _time_fit(model, data, job, callbacks=()):
    """One warm-up `fit` (trace), then one timed epoch of `steps` steps.

    "total_s" is `fit`'s loop, first batch to epoch end (callbacks included); "after_fit_s" is
    what the call took after that: TensorFlow's tf.data autotuning thread holds the end of every
    `fit` until its next wake-up (README, "Training speed").
    """
    quiet = {"epochs": 1, "verbose": 0, "shuffle": False}
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=job["warmup_steps"], **quiet)
    first = time.perf_counter() - start
    clock = _fit_clock()
    model.fit(data, steps_per_epoch=job["steps"], callbacks=[clock, *callbacks], **quiet)
    returned = time.perf_counter()
    return {
        "first_s": first,
        "steps": summarize(clock.seconds),
        "total_s": clock.ended - clock.began,
        "after_fit_s": returned - clock.ended,
    }


def _fit_as_train(job):
    """`train`'s compiled model and callbacks (a scratch run folder), on its pipeline."""
    from tfdeeplab import training
    from tfdeeplab.callbacks import BestModelCheckpoint

    with tempfile.TemporaryDirectory() as out:
        config = _config(job, out)
        folder, _, data, _ = training.datasets(config)
        # The data's labels, the benchmark's class count (as in every other row).
        folder = dataclasses.replace(folder, num_classes=job["num_classes"])
        model = training.compiled_model(config, folder, job["steps"])
        own = training.training_callbacks(config, training.prepare_out(config))["all"]
        # Without validation data there is no val_mean_iou to pick the best model by.
        own = [callback for callback in own if not isinstance(callback, BestModelCheckpoint)]
        return _time_fit(model, data, job, own)


def _use_space_to_batch():
    """Every atrous layer as before native kernels: the capability check answers no."""
    from tfdeeplab.layers import atrous

    atrous.native_dilation_supported = lambda *args, **kwargs: False


def keras_job(job):
    """One tfdeeplab row (`job["row"]`, one of KERAS_ROWS or PIPELINE) in this process."""
    tf = set_tf_threads(job["threads"])
    import keras

    from benchmarks.flops import graph_macs
    from tfdeeplab.strategy import dtype_policy

    keras.utils.set_random_seed(0)
    row = job["row"]
    if row == PIPELINE:
        return _pipeline_rate(job)
    if row == FIT_TRAIN:
        return _fit_as_train(job)
    if row == SPACE_TO_BATCH:
        _use_space_to_batch()
    with dtype_policy(row == MIXED):
        model = _model(job)
    images, labels = _batch(tf, job)
    if row == FIT_MEMORY:
        return _time_fit(model, tf.data.Dataset.from_tensors((images, labels)).repeat(), job)
    if row == FIT_PIPELINE:
        return _time_fit(model, _pipeline(job), job)
    step = lambda: model.train_on_batch(images, labels)  # noqa: E731
    result = time_steps(step, job["warmup_steps"], job["steps"])
    forward = tf.function(lambda x: model(x, training=False))
    one_image = tf.TensorSpec((1, *images.shape[1:]), tf.float32)
    macs = graph_macs(forward.get_concrete_function(one_image))
    return {**result, "forward_macs_per_image": macs, "params": model.count_params()}


def _pipeline_rate(job):
    """Batches of the augmented folder pipeline alone, timed after its first batch (start-up,
    reported as "first_s")."""
    iterator = iter(_pipeline(job))
    return time_steps(lambda: next(iterator), warmup_steps=1, steps=job["pipeline_batches"])
