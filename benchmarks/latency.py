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
    rounds=1,
):
    """Measures every artifact, each in its own subprocess, and this machine's matmul peak.

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
    peak = rates["peak"]
    progress(
        f"float32 matmul peak ({threads} threads): {peak:.1f} GFLOP/s "
        f"(TensorFlow {rates['tensorflow']:.1f}, XNNPACK {rates['xnnpack']:.1f})"
    )
    progress(plain_header())
    job = {"input_size": list(input_size), "batch": batch, "threads": threads,
           "timing": timing or {}}  # fmt: skip
    results = _measure_rounds(paths, job, rounds, peak, progress, onednn)
    return {
        "machine": machine(),
        "settings": {
            "input_size": list(input_size),
            "batch": batch,
            "threads": threads,
            "timing": timing or {},
            "onednn": onednn,
            "matmul_size": matmul_size,
            "rounds": rounds,
        },
        "matmul_peak_gflops": peak,
        "matmul_gflops": {"tensorflow": rates["tensorflow"], "xnnpack": rates["xnnpack"]},
        "results": results,
    }


def _measure_rounds(paths, job, rounds, peak, progress, onednn):
    """Every artifact measured `rounds` times (whole list per round); the median rounds."""
    measured = [[] for _ in paths]
    for round_index in range(rounds):
        if rounds > 1:
            progress(f"round {round_index + 1} of {rounds}")
        for path, rows in zip(paths, measured, strict=True):
            result = run_in_subprocess(
                "benchmarks.artifacts:measure_job",
                {**job, "path": str(path)},
                str(path),
                onednn=onednn,
            )
            row = {"label": label_of(path), **result, "onednn": onednn}
            row["gflops_per_s"] = 2 * row["macs"] / (row["runs"]["p50_ms"] / 1000) / 1e9
            row["fraction_of_peak"] = row["gflops_per_s"] / peak
            rows.append(row)
            progress(plain_row(row))
    return [_median_round(rows) for rows in measured]


def _median_round(rows):
    """The round whose p50 is the median of the rounds' (the lower middle one of an even
    count), with every round's p50 in "round_p50_ms"."""
    p50s = [row["runs"]["p50_ms"] for row in rows]
    chosen = sorted(rows, key=lambda row: row["runs"]["p50_ms"])[(len(rows) - 1) // 2]
    return {**chosen, "round_p50_ms": p50s}


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
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure the list this many times; keep medians"
    )
    parser.add_argument("--json", help="write the report to this JSON file")
    parser.add_argument("--chart", help="PNG chart; default: the --json path with .png")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


def main(argv=None, prog="python -m benchmarks.latency"):
    args = build_parser(prog).parse_args(argv)
    if len(args.input_size) > 2 or min(args.input_size) < 1:
        raise SystemExit(f"--input-size takes H or H W (positive), got {args.input_size}")
    for name in ("batch", "min_runs", "rounds"):
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
