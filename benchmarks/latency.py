"""Latency, memory and arithmetic of .keras, SavedModel and .tflite artifacts, side by side.

    python -m benchmarks.latency run/best.keras run/saved_model run/model_int8.tflite \\
        --input-size 513 --threads 2 --json latency.json
    tfdeeplab benchmark ...  (the same)

Follows TFLite `benchmark_model`: the time to load the artifact (init), the first inference, the
warm-up average, then a timed phase that runs until both `--min-runs` and `--min-secs` are reached
(or `--max-secs` passed), reported as count, mean, std, min, max and p50/p90/p95/p99 in ms. Every
artifact is measured in its own subprocess, one after the other, so peak resident memory is its
own and no artifact's threads or caches slow another; the ratios between rows are meaningful,
absolute times drift on shared machines. TFLite timings are of `invoke()` alone, as in
`benchmark_model`; Keras and SavedModel timings include fetching the outputs.

Every artifact's process runs with TensorFlow's oneDNN kernels set explicitly (off by default,
`--onednn` turns them on; LiteRT does not use them), recorded in the report's settings.

Each row also gives the artifact's multiply-accumulates at that size and its achieved GFLOP/s as
a fraction of this machine's float32 matrix-multiply peak, measured by the harness in the same
run: the physical limit. Writes JSON (--json) and a PNG chart of the mean latency per artifact
with p50-p95 whiskers (--chart, default beside the JSON).
"""

import argparse
import importlib
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.stats import Timing, add_timing_arguments, machine, time_runs
from benchmarks.worker import add_onednn_argument, run_in_subprocess, set_tf_threads

KINDS = ("keras", "saved_model", "tflite")
_MIB = 2**20


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
        "peak_rss_mib": peak / _MIB,
        "init_memory_mib": (init_peak - start_rss) / _MIB,
        "overall_memory_mib": (peak - start_rss) / _MIB,
        **details(),  # after timing, so freezing a graph to count MACs adds no memory above
    }


def measure_job(job):
    """`measure` as a `benchmarks.worker` target."""
    return measure(job["path"], job["input_size"], job["batch"], job["threads"], job["timing"])


def matmul_job(job):
    """`matmul_peak_gflops` as a `benchmarks.worker` target."""
    return matmul_peak_gflops(job["threads"], job["size"])


def matmul_peak_gflops(threads=None, size=2048, runs=10):
    """This machine's float32 matrix-multiply rate in GFLOP/s, best of `runs`.

    Measured with both engines the artifacts run on: TensorFlow's MatMul (Eigen) and LiteRT's
    FULLY_CONNECTED (XNNPACK); the peak is the faster.

    Returns:
        {"tensorflow": GFLOP/s, "xnnpack": GFLOP/s, "peak": the larger}.
    """
    tf = set_tf_threads(threads or os.cpu_count())
    import keras

    from converters.litert import LiteRTModel
    from converters.tflite import convert_to_tflite

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype("float32")
    b = tf.constant(rng.standard_normal((size, size)), tf.float32)
    left = tf.constant(a)
    rates = {"tensorflow": _best_rate(lambda: tf.linalg.matmul(left, b).numpy(), size, runs)}

    inputs = keras.Input((size,), batch_size=size)
    dense = keras.layers.Dense(size, use_bias=False)
    model = keras.Model(inputs, dense(inputs))
    litert = LiteRTModel(convert_to_tflite(model, (size, size)), num_threads=threads)
    litert.set_input(a)
    rates["xnnpack"] = _best_rate(litert.interpreter.invoke, size, runs)
    return {**rates, "peak": max(rates.values())}


def _best_rate(run, size, runs):
    for _ in range(3):
        run()
    best = np.inf
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def label_of(path):
    """A short row label: the artifact's folder and name."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def benchmark(
    paths,
    input_size,
    batch=1,
    threads=None,
    timing=None,
    progress=print,
    onednn=False,
    matmul_size=2048,
):
    """Measures every artifact, each in its own subprocess, and this machine's matmul peak.

    `onednn` sets TensorFlow's oneDNN kernels on or off in every measuring process;
    `matmul_size` is the side of the square float32 matrices of the peak measurement.

    Returns:
        {"machine", "settings", "matmul_peak_gflops", "results": [one `measure` dict per
        artifact, plus "label", "gflops_per_s" and "fraction_of_peak"]}.
    """
    for path in paths:
        artifact_kind(path)  # every path is checked before the first measurement
    threads = threads or os.cpu_count()
    rates = run_in_subprocess(
        "benchmarks.latency:matmul_job",
        {"threads": threads, "size": matmul_size},
        "the matmul peak",
        onednn=onednn,
    )
    peak = rates["peak"]
    progress(
        f"float32 matmul peak ({threads} threads): {peak:.1f} GFLOP/s "
        f"(TensorFlow {rates['tensorflow']:.1f}, XNNPACK {rates['xnnpack']:.1f})"
    )
    progress(_plain_header())
    results = []
    for path in paths:
        job = {
            "path": str(path),
            "input_size": list(input_size),
            "batch": batch,
            "threads": threads,
            "timing": timing or {},
        }
        measured = run_in_subprocess(
            "benchmarks.latency:measure_job", job, str(path), onednn=onednn
        )
        row = {"label": label_of(path), **measured, "onednn": onednn}
        row["gflops_per_s"] = 2 * row["macs"] / (row["runs"]["p50_ms"] / 1000) / 1e9
        row["fraction_of_peak"] = row["gflops_per_s"] / peak
        results.append(row)
        progress(_plain_row(row))
    return {
        "machine": machine(),
        "settings": {
            "input_size": list(input_size),
            "batch": batch,
            "threads": threads,
            "timing": timing or {},
            "onednn": onednn,
            "matmul_size": matmul_size,
        },
        "matmul_peak_gflops": peak,
        "matmul_gflops": {"tensorflow": rates["tensorflow"], "xnnpack": rates["xnnpack"]},
        "results": results,
    }


_COLUMNS = (
    ("artifact", "{label}"),
    ("format", "{format}"),
    ("MiB", "{size_mib:.1f}"),
    ("init ms", "{init_ms:.0f}"),
    ("first ms", "{first_ms:.1f}"),
    ("mean ms", "{mean_ms:.1f}"),
    ("std", "{std_ms:.1f}"),
    ("p50 ms", "{p50_ms:.1f}"),
    ("p95 ms", "{p95_ms:.1f}"),
    ("runs", "{count}"),
    ("peak RSS MiB", "{peak_rss_mib:.0f}"),
    ("GMACs", "{gmacs:.2f}"),
    ("GFLOP/s", "{gflops_per_s:.1f}"),
    ("% peak", "{percent_of_peak:.0f}"),
    ("XNNPACK partitions", "{partitions}"),
)


def _cells(row):
    names = {"keras": "Keras", "saved_model": "SavedModel", "tflite": "TFLite"}
    values = {
        **row,
        **row["runs"],
        "format": f"{names[row['kind']]} {row['precision']}",
        "size_mib": row["size_bytes"] / _MIB,
        "gmacs": row["macs"] / 1e9,
        "percent_of_peak": 100 * row["fraction_of_peak"],
        "partitions": row.get("partitions", "-"),
    }
    return [template.format(**values) for _, template in _COLUMNS]


def _widths():
    return [42, 18, *(max(10, len(name) + 1) for name, _ in _COLUMNS[2:])]


def _plain_row(row):
    return "".join(
        f"{cell:<{width}}" if index < 2 else f"{cell:>{width}}"
        for index, (cell, width) in enumerate(zip(_cells(row), _widths(), strict=True))
    )


def _plain_header():
    return "".join(
        f"{name:<{width}}" if index < 2 else f"{name:>{width}}"
        for index, ((name, _), width) in enumerate(zip(_COLUMNS, _widths(), strict=True))
    )


def plain_table(report):
    lines = [_plain_header(), *(_plain_row(row) for row in report["results"])]
    return "\n".join(lines)


def markdown_table(report):
    header = [name for name, _ in _COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in report["results"]]
    return "\n".join(lines)


def write_chart(report, path):
    """PNG: mean latency per artifact, whiskers from p50 to p95."""
    from tfdeeplab.plots import latency_bars

    rows = report["results"]
    settings = report["settings"]
    height, width = settings["input_size"]
    runs = [row["runs"] for row in rows]
    return latency_bars(
        path,
        [f"{row['label']} ({_cells(row)[1]})" for row in rows],
        [r["mean_ms"] for r in runs],
        [r["p50_ms"] for r in runs],
        [r["p95_ms"] for r in runs],
        title=f"Latency at {height}×{width}, batch {settings['batch']}, "
        f"{settings['threads']} threads",
    )


def build_parser(prog="python -m benchmarks.latency"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", help=".keras files, SavedModel folders, .tflite")
    parser.add_argument("--input-size", type=int, nargs="+", default=[513], help="H [W]")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    add_timing_arguments(parser, min_runs=50)
    add_onednn_argument(parser)
    parser.add_argument(
        "--matmul-size", type=int, default=2048, help="side of the matmul peak's matrices"
    )
    parser.add_argument("--json", help="write the report to this JSON file")
    parser.add_argument("--chart", help="PNG chart; default: the --json path with .png")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


def main(argv=None, prog="python -m benchmarks.latency"):
    args = build_parser(prog).parse_args(argv)
    if len(args.input_size) > 2 or min(args.input_size) < 1:
        raise SystemExit(f"--input-size takes H or H W (positive), got {args.input_size}")
    for name in ("batch", "min_runs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    size = (args.input_size[0], args.input_size[-1])
    timing = Timing.from_args(args).as_dict()
    try:
        report = benchmark(
            args.artifacts,
            size,
            args.batch,
            args.threads,
            timing,
            onednn=args.onednn,
            matmul_size=args.matmul_size,
        )
    except ValueError as error:
        raise SystemExit(str(error)) from None
    print(markdown_table(report) if args.markdown else plain_table(report))
    from tfdeeplab.atomic import atomic_write_bytes

    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=2).encode())
        print(f"wrote {args.json}")
    chart = args.chart or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if chart:
        write_chart(report, chart)
        print(f"wrote {chart}")
    return report


if __name__ == "__main__":
    main()
