"""One artifact measured in this process, as `benchmark_model` does: load (init), first
inference, warm-up, the timed phase, memory, MACs, and for TFLite its precision, ops and
delegate. `benchmarks.latency` runs `measure_job` in a fresh process per artifact.
"""

import importlib
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.stats import time_runs
from benchmarks.worker import set_tf_threads

MIB = 2**20

KINDS = ("keras", "saved_model", "tflite")


def artifact_kind(path):
    """ "keras", "saved_model" or "tflite"; ValueError naming `path` for anything else."""
    path = Path(path)
    if path.is_file() and path.suffix == ".keras":
        return "keras"
    if path.is_file() and path.suffix == ".tflite":
        return "tflite"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "saved_model"
    problem = "does not exist" if not path.exists() else "is not one"
    raise ValueError(
        f"{path}: {problem}; artifacts are .keras files, .tflite files or SavedModel folders "
        "(with saved_model.pb)"
    )


def _size_bytes(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _rss_bytes():
    """Current resident memory of this process."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes():
    """Peak resident memory of this process since it started (VmHWM).

    Not getrusage's ru_maxrss: Linux carries that over exec from the forking parent, so every
    subprocess of a large parent would report the parent's size.
    """
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise OSError("/proc/self/status has no VmHWM line")


def _keras_runner(path, images, threads):
    tf = set_tf_threads(threads)
    import keras

    import tfdeeplab  # noqa: F401  (registers the custom layers for loading)
    from benchmarks.flops import graph_macs

    model = keras.saving.load_model(path, compile=False)
    forward = tf.function(lambda x: model(x, training=False))
    spec = tf.TensorSpec(images.shape, tf.float32)
    forward.get_concrete_function(spec)  # tracing is part of loading, as for the others
    inputs = tf.constant(images)

    def run():
        return tf.nest.map_structure(np.asarray, forward(inputs))

    return run, lambda: {"macs": graph_macs(forward.get_concrete_function(spec))}


def _saved_model_runner(path, images, threads):
    tf = set_tf_threads(threads)
    from benchmarks.flops import graph_macs

    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"{path}: the SavedModel has no serving_default signature")
    # Concrete functions hold their variables weakly: the closures below keep `loaded` alive.
    names = list(loaded.signatures["serving_default"].structured_input_signature[1])
    if len(names) != 1:
        raise ValueError(f"{path}: serving_default takes {names}; one image input is benchmarked")
    inputs = tf.constant(images)

    def run():
        outputs = loaded.signatures["serving_default"](**{names[0]: inputs})
        return {key: value.numpy() for key, value in outputs.items()}

    def details():
        spec = tf.TensorSpec(images.shape, tf.float32)
        wrapper = tf.function(lambda x: loaded.signatures["serving_default"](**{names[0]: x}))
        return {"macs": graph_macs(wrapper.get_concrete_function(spec))}

    return run, details


def _tflite_precision(model):
    """fp32, float16, dynamic (int8 weights, float activations) or int8 (integer kernels)."""
    tensors = model.interpreter.get_tensor_details()
    if any(tensor["dtype"] == np.float16 for tensor in tensors):
        return "float16"
    convolutions = [
        op
        for op in model.interpreter._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]
    dtypes = {tensor["index"]: tensor["dtype"] for tensor in tensors}
    if any(dtypes[op["inputs"][0]] in (np.int8, np.uint8) for op in convolutions):
        return "int8"
    if any(dtypes[op["inputs"][1]] == np.int8 for op in convolutions):
        return "dynamic"
    return "fp32"


def _tflite_runner(path, images, threads):
    from benchmarks.flops import tflite_macs
    from converters.litert import LiteRTModel

    model = LiteRTModel(path, num_threads=threads)
    declared = model.input_shape
    if any(d not in (-1, s) for d, s in zip(declared, images.shape, strict=True)):
        raise ValueError(
            f"{path}: the file takes input {declared} (-1: any), not {images.shape}; "
            "benchmark it at its own --input-size and --batch"
        )
    model.set_input(images)  # allocation and delegate set-up belong to init

    def details():
        ops = {}
        for name in model.op_names:
            ops[name] = ops.get(name, 0) + 1
        return {
            "macs": tflite_macs(model, images.shape),
            "precision": _tflite_precision(model),
            "ops": ops,
            **model.delegation(),
        }

    return model.interpreter.invoke, details


def _import_runtime(kind):
    if kind == "tflite":
        importlib.import_module("converters.litert")  # LiteRT alone, without TensorFlow
    else:
        for module in ("tensorflow", "keras", "tfdeeplab"):
            importlib.import_module(module)


_RUNNERS = {"keras": _keras_runner, "saved_model": _saved_model_runner, "tflite": _tflite_runner}


def measure(path, input_size, batch=1, threads=None, timing=None, seed=0):
    """Measures one artifact in this process; `benchmark` calls it in a fresh subprocess each.

    Args:
        path: a `.keras` file, a SavedModel folder or a `.tflite` file.
        input_size: (height, width) of the random images fed.
        batch: images per inference.
        threads: TFLite num_threads and TF intra/inter-op threads; default: every core.
        timing: keyword arguments of `benchmarks.stats.time_runs`.

    Returns:
        A dict: kind, size, init/first/warm-up times, the timed runs' statistics, memory
        (peak RSS, and its growth over init and over the whole measurement, as
        `benchmark_model`'s memory footprint), MACs, and for TFLite the precision, op counts and
        delegate.
    """
    kind = artifact_kind(path)
    threads = threads or os.cpu_count()
    height, width = input_size
    images = np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3))
    images = images.astype("float32")
    _import_runtime(kind)  # library start-up is not the artifact's load time nor its memory
    start_rss = _rss_bytes()
    start = time.perf_counter()
    run, details = _RUNNERS[kind](path, images, threads)
    init_ms = (time.perf_counter() - start) * 1000
    init_peak = _peak_rss_bytes()
    result = time_runs(run, **(timing or {}))
    peak = _peak_rss_bytes()
    return {
        "artifact": str(path),
        "kind": kind,
        "precision": "fp32",
        "size_bytes": _size_bytes(path),
        "input_shape": [batch, height, width, 3],
        "threads": threads,
        "init_ms": init_ms,
        **result,
        "peak_rss_mib": peak / MIB,
        "init_memory_mib": (init_peak - start_rss) / MIB,
        "overall_memory_mib": (peak - start_rss) / MIB,
        **details(),  # after timing, so freezing a graph to count MACs adds no memory above
    }


def measure_job(job):
    """`measure` as a `benchmarks.worker` target."""
    return measure(job["path"], job["input_size"], job["batch"], job["threads"], job["timing"])
