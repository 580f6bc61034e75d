"""Where training runs: tf.distribute strategies, the chief worker, the compute dtype policy."""

import contextlib
import json
import os
import warnings

import keras
import tensorflow as tf

from tfdeeplab.config import Distribution


def make_strategy(distribute):
    """The tf.distribute strategy for `Distribution` `distribute` (TF_CONFIG for multiworker)."""
    kind = Distribution(distribute)
    if kind is Distribution.MIRRORED:
        return tf.distribute.MirroredStrategy()
    if kind is Distribution.MULTIWORKER:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind is Distribution.TPU:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def worker_index():
    """(task type, index) from TF_CONFIG; ("chief"-like "worker", 0) without one."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def is_chief():
    kind, index = worker_index()
    return kind == "chief" or (kind == "worker" and index == 0)


def cpu_has_bfloat16():
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX); None where unknown."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = next((line for line in file if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split(":", 1)[1].split()))


@contextlib.contextmanager
def dtype_policy(mixed_precision):
    """mixed_bfloat16 on CPU (and TPU), mixed_float16 on GPU, for the duration of the block."""
    previous = keras.config.dtype_policy()
    if mixed_precision:
        gpus = tf.config.list_physical_devices("GPU")
        keras.config.set_dtype_policy("mixed_float16" if gpus else "mixed_bfloat16")
        if not gpus and cpu_has_bfloat16() is False:
            warnings.warn(
                "--mixed-precision on a CPU without bfloat16 instructions (no avx512_bf16 or "
                "amx_bf16 in /proc/cpuinfo): TensorFlow emulates bfloat16, which trained "
                "15-18x slower than float32 on an AVX2 CPU (benchmarks.training); leave it off",
                stacklevel=3,
            )
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def patch_for_multiworker(model):
    """Works around keras-team/keras#20585 (open): Keras 3.15's `fit` fails twice under
    MultiWorkerMirroredStrategy, on the model instance only:

    - `_maybe_symbolic_build` passes the whole (x, y) batch of per-replica values to
      `strategy.reduce`; building needs only shapes, so it builds from one local replica's batch.
    - the step logs are reduced with `strategy.reduce("MEAN", value, axis=0)`, which rejects the
      scalar losses and metrics; the steps return them with shape (1,), whose mean over axis 0
      across workers is the right scalar.
    """

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda value: (
                        model.distribute_strategy.experimental_local_results(value)[0]
                        if isinstance(value, tf.distribute.DistributedValues)
                        else value
                    ),
                    next(batches),
                )
                break
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def with_vector_logs(step):
        def wrapped(data):
            return keras.tree.map_structure(lambda v: tf.reshape(v, [1]), step(data))

        return wrapped

    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = with_vector_logs(model.train_step)
    model.test_step = with_vector_logs(model.test_step)
