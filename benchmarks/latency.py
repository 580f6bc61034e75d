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
a fraction of this machine's matrix-multiply peak for its precision, measured by the harness in
the same run: float32 for float files, int8 for int8 and dynamic-range files. Writes JSON
(--json) and a PNG chart of the mean latency per artifact with p50-p95 whiskers (--chart,
default beside the JSON).
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.artifacts import artifact_kind
from benchmarks.latency_report import (
    markdown_table,
    plain_header,
    plain_row,
    plain_table,
    write_chart,
)
from benchmarks.stats import Timing, add_timing_arguments, machine
from benchmarks.worker import add_onednn_argument, run_in_subprocess, set_tf_threads


def matmul_job(job):
    """`matmul_peak_gflops` as a `benchmarks.worker` target."""
    return matmul_peak_gflops(job["threads"], job["size"])


def matmul_peak_gflops(threads=None, size=2048, runs=10):
    """This machine's matrix-multiply rates in GFLOP/s (GOP/s for int8), best of `runs`.

    float32 is measured with both engines the artifacts run on: TensorFlow's MatMul (Eigen)
    and LiteRT's FULLY_CONNECTED (XNNPACK); its peak is the faster. int8 is LiteRT's
    FULLY_CONNECTED on int8 tensors (XNNPACK's integer GEMM, which AVX-512 VNNI speeds up),
    the limit int8 and dynamic-range files are measured against.

    Returns:
        {"tensorflow", "xnnpack", "peak" (the larger), "int8_peak"}.
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
    integer = LiteRTModel(_int8_matmul_flatbuffer(tf, a, b), num_threads=threads)
    integer.set_input(a)
    int8 = _best_rate(integer.interpreter.invoke, size, runs)
    return {**rates, "peak": max(rates.values()), "int8_peak": int8}


def _int8_matmul_flatbuffer(tf, a, b):
    """a @ b as a full-integer TFLite file (one int8 FULLY_CONNECTED) with int8 input and
    output, so that invoke() is the integer GEMM alone, without (de)quantization."""
    product = tf.function(
        lambda x: tf.linalg.matmul(x, b), input_signature=[tf.TensorSpec(a.shape, tf.float32)]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [product.get_concrete_function()], product
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([a] for _ in range(2))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


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


DEFAULT_SIZE = (513, 513)


def artifact_input_size(path):
    """The (H, W) a `.tflite` file with a fixed input takes, from its tfdeeplab metadata or
    else its input tensor; None for other artifacts and dynamic files."""
    if artifact_kind(path) != "tflite":
        return None
    from converters.metadata import read_metadata

    try:
        shape = read_metadata(path)["input"]["shape"]
    except (ValueError, KeyError):  # no tfdeeplab metadata (e.g. another project's file)
        from converters.litert import LiteRTModel

        shape = [None if d < 0 else d for d in LiteRTModel(path).input_shape]
    return None if None in shape[1:3] else (int(shape[1]), int(shape[2]))


def artifact_job(path, input_size, batch, threads, timing):
    """The job of `benchmarks.artifacts:measure_job` measuring `path` at `input_size` (H, W)."""
    return {"path": str(path), "input_size": list(input_size), "batch": batch,
            "threads": threads, "timing": timing or {}}  # fmt: skip


def benchmark(
    paths,
    input_size=None,
    batch=1,
    threads=None,
    timing=None,
    progress=print,
    onednn=False,
    matmul_size=2048,
    rounds=1,
):
    """Measures every artifact, each in its own subprocess, and this machine's matmul peak.

    `input_size` (H, W) feeds every artifact; None: each fixed-size `.tflite` file its own
    size (`artifact_input_size`) and the others `DEFAULT_SIZE`.
    `onednn` sets TensorFlow's oneDNN kernels on or off in every measuring process;
    `matmul_size` is the side of the square float32 matrices of the peak measurement.
    `rounds` > 1 measures the whole list that many times, one round after another, and keeps
    per artifact the round with the median p50: on a shared machine a neighbour's burst then
    slows one round, not one artifact's only measurement (a single round once measured a
    file 1.48× slower than a rerun minutes later found it).

    Returns:
        {"machine", "settings", "matmul_peak_gflops", "results": [one `measure` dict per
        artifact, plus "label", "gflops_per_s", "fraction_of_peak" and "round_p50_ms"]}.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: measure at least one round")
    for path in paths:
        artifact_kind(path)  # every path is checked before the first measurement
    threads = threads or os.cpu_count()
    rates = run_in_subprocess(
        "benchmarks.latency:matmul_job",
        {"threads": threads, "size": matmul_size},
        "the matmul peak",
        onednn=onednn,
    )
    peak = {"float": rates["peak"], "int8": rates["int8_peak"]}
    progress(
        f"float32 matmul peak ({threads} threads): {peak['float']:.1f} GFLOP/s "
        f"(TensorFlow {rates['tensorflow']:.1f}, XNNPACK {rates['xnnpack']:.1f}); "
        f"int8 (XNNPACK): {peak['int8']:.1f} GOP/s"
    )
    progress(plain_header())
    jobs = [
        artifact_job(path, input_size or artifact_input_size(path) or DEFAULT_SIZE, batch,
                     threads, timing)
        for path in paths
    ]  # fmt: skip
    results = _measure_rounds(jobs, rounds, peak, progress, onednn)
    return {
        "machine": machine(),
        "settings": {
            "input_size": list(input_size) if input_size else None,
            "batch": batch,
            "threads": threads,
            "timing": timing or {},
            "onednn": onednn,
            "matmul_size": matmul_size,
            "rounds": rounds,
        },
        "matmul_peak_gflops": peak["float"],
        "matmul_int8_peak_gops": peak["int8"],
        "matmul_gflops": {"tensorflow": rates["tensorflow"], "xnnpack": rates["xnnpack"]},
        "results": results,
    }


def _measure_rounds(jobs, rounds, peak, progress, onednn):
    """Every artifact's job measured `rounds` times (whole list per round); the median rounds."""
    measured = [[] for _ in jobs]
    for round_index in range(rounds):
        if rounds > 1:
            progress(f"round {round_index + 1} of {rounds}")
        for job, rows in zip(jobs, measured, strict=True):
            result = run_in_subprocess(
                "benchmarks.artifacts:measure_job", job, job["path"], onednn=onednn
            )
            row = {"label": label_of(job["path"]), **result, "onednn": onednn}
            row["gflops_per_s"] = 2 * row["macs"] / (row["runs"]["p50_ms"] / 1000) / 1e9
            row["peak_kind"] = _peak_kind(row)
            row["fraction_of_peak"] = row["gflops_per_s"] / peak[row["peak_kind"]]
            rows.append(row)
            progress(plain_row(row))
    return [_median_round(rows) for rows in measured]


def _peak_kind(row):
    """ "int8" for files whose convolutions run integer GEMMs (int8, and dynamic-range, whose
    XNNPACK kernels quantize activations on the fly), else "float"."""
    return "int8" if row.get("precision") in ("int8", "dynamic") else "float"


def _median_round(rows):
    """The round whose p50 is the median of the rounds' (the lower middle one of an even
    count), with every round's p50 in "round_p50_ms"."""
    p50s = [row["runs"]["p50_ms"] for row in rows]
    chosen = sorted(rows, key=lambda row: row["runs"]["p50_ms"])[(len(rows) - 1) // 2]
    return {**chosen, "round_p50_ms": p50s}


def build_parser(prog="python -m benchmarks.latency"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", help=".keras files, SavedModel folders, .tflite")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        help="H [W]; default: a fixed-size .tflite file's own size (its metadata), else 513",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    add_timing_arguments(parser, min_runs=50)
    add_onednn_argument(parser)
    parser.add_argument(
        "--matmul-size", type=int, default=2048, help="side of the matmul peak's matrices"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure the list this many times; keep medians"
    )
    parser.add_argument("--json", help="write the report to this JSON file")
    parser.add_argument("--chart", help="PNG chart; default: the --json path with .png")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


def main(argv=None, prog="python -m benchmarks.latency"):
    args = build_parser(prog).parse_args(argv)
    if args.input_size and (len(args.input_size) > 2 or min(args.input_size) < 1):
        raise SystemExit(f"--input-size takes H or H W (positive), got {args.input_size}")
    for name in ("batch", "min_runs", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    size = (args.input_size[0], args.input_size[-1]) if args.input_size else None
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
            rounds=args.rounds,
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
