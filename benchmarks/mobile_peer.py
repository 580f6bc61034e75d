"""Our mobile DeepLabV3 beside TensorFlow's published one, same input, threads and harness.

    python -m benchmarks.mobile_peer --peer ../shared/peers/deeplabv3_257_mv_gpu.tflite \\
        --threads 2

The peer is the DeepLabV3 of TensorFlow Lite's segmentation example (MobileNetV2 width 0.5,
output stride 8, 257×257, 21 classes, float32, a head of image pooling + one 1×1 branch). Ours
are `DeepLabV3(21, "mobilenetv2", alpha=0.5, output_stride=8)` with that light head
(`aspp_rates=()`), with the standard head (three 3×3 atrous branches, "auto" rates) and with the
light head + PointRend, each exported by `converters.export_tflite` at the peer's size as fp32
and as int8 (calibrated on synthetic scenes). The weights are untrained, but every batch
normalisation's moving statistics are set to those of the scenes (`with_data_statistics`):
with the initial ones (mean 0, variance 1) activations shrink ~10× per block and the logits
come out at 1e-10, and an int8 file of such a model is not the file of a trained one (XNNPACK
declines int8 ADDs whose input and output scales differ by more than 2¹⁰, so PointRend's
by-parts point head ran in 22 partitions instead of 10). The light head also as the file a
phone app would ship: int8 with uint8 camera bytes in and uint8 class ids out (the argmax in
the graph; no float (de)quantization).
`benchmarks.latency` measures every file in its own process in one run (with the matmul
peaks); the report gives p50, MACs and XNNPACK partitions, and each file's p50 as a ratio to
the peer's. Every file is measured in `--rounds` rounds (3) and the median
round kept: one round on a shared 2-core machine once put our light head at 1.48× the peer,
where a rerun minutes later measured 0.98×.

Writes `--out` (Markdown), its JSON and the latency chart.
"""

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.stats import Timing, add_timing_arguments, generated_by, machine, write_report
from benchmarks.worker import run_in_subprocess

NUM_CLASSES = 21
VARIANTS = {
    "light head": {"aspp_rates": ()},
    "standard head": {"aspp_rates": "auto"},
    "light head + PointRend": {"aspp_rates": (), "pointrend": True},
}


def with_data_statistics(model, images):
    """Sets every batch normalisation's moving mean and variance to the batch statistics of
    `images` (one training-mode pass with momentum 0); no weight changes. Returns `model`."""
    import keras

    norms = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    return model


def export_job(job):
    """Every variant as fp32 and int8 TFLite files at the peer's size."""
    from benchmarks.worker import set_tf_threads

    set_tf_threads(job["threads"])
    from converters import calibration_dataset, export_tflite
    from tfdeeplab import DeepLabV3

    size, folder = (job["size"], job["size"]), Path(job["folder"])
    calibration = calibration_dataset(job["scenes"], size, "train")
    images = calibration_dataset(job["scenes"], size, "train", batch_size=8)
    images = next(iter(images))[0]
    paths = {}
    for index, (name, options) in enumerate(VARIANTS.items()):
        model = DeepLabV3(
            NUM_CLASSES, "mobilenetv2", output_stride=8, alpha=0.5, crop_size=job["size"],
            **options,
        )  # fmt: skip
        with_data_statistics(model, images)
        paths[f"{name}, fp32"] = str(export_tflite(model, folder / f"v{index}_fp32.tflite",
                                                   input_size=size))  # fmt: skip
        int8 = export_tflite(model, folder / f"v{index}_int8.tflite", "int8", size, calibration, 16)
        paths[f"{name}, int8"] = str(int8)
        if index == 0:  # what a phone app draws: camera bytes in, class ids out
            phone = export_tflite(model, folder / "v0_phone.tflite", "int8", size, calibration,
                                  16, output="mask", io_type="uint8")  # fmt: skip
            paths[f"{name}, int8, uint8 in, mask out"] = str(phone)
    return paths


def markdown(report):
    settings = report["settings"]
    peer = report["rows"][0]
    lines = [
        "# Our mobile DeepLabV3 beside TensorFlow's published one",
        "",
        f"{generated_by(report)}, {settings['threads']} threads, {settings['input_size']}² "
        f"input, batch 1, in {report['wall_s'] / 60:.0f} min; float32 matmul peak "
        f'{report["matmul_peak_gflops"]:.0f} GFLOP/s. Ours: `DeepLabV3(21, "mobilenetv2", '
        "alpha=0.5, output_stride=8)`, untrained with its batch normalisations' statistics "
        "set to those of the calibration scenes, exported by `converters.export_tflite`.",
        "",
        f"Each file measured in {settings['rounds']} rounds, one after another; p50 is the "
        "median round's, the range is every round's p50.",
        "",
        "| file | GMACs | p50 ms | rounds' p50 range | × published | XNNPACK partitions | MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['label']} | {row['macs'] / 1e9:.2f} | {row['runs']['p50_ms']:.1f} "
            f"| {min(row['round_p50_ms']):.1f}–{max(row['round_p50_ms']):.1f} "
            f"| {row['runs']['p50_ms'] / peer['runs']['p50_ms']:.2f} "
            f"| {row.get('partitions', '-')} | {row['size_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    from benchmarks.latency import benchmark
    from benchmarks.latency_report import write_chart

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", required=True, help="the published .tflite file")
    parser.add_argument("--input-size", type=int, default=257)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each file")
    parser.add_argument("--out", default="benchmarks/MOBILE_PEER.md")
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        from tfdeeplab.data import synthetic_scenes

        scenes = synthetic_scenes(Path(temporary) / "scenes", 16, args.input_size, 6, seed=0)
        job = {"threads": args.threads, "size": args.input_size, "folder": temporary,
               "scenes": str(scenes)}  # fmt: skip
        paths = run_in_subprocess("benchmarks.mobile_peer:export_job", job, "the exports")
        size = (args.input_size, args.input_size)
        timing = Timing.from_args(args).as_dict()
        files = [args.peer, *paths.values()]
        measured = benchmark(files, size, 1, args.threads, timing, rounds=args.rounds)
    labels = ["published DeepLabV3 (TensorFlow, fp32)", *(f"ours, {name}" for name in paths)]
    for row, label in zip(measured["results"], labels, strict=True):
        row["label"] = label
    report = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "command": "python -m benchmarks.mobile_peer " + shlex.join(argv or sys.argv[1:]),
        "matmul_peak_gflops": measured["matmul_peak_gflops"],
        "rows": measured["results"],
        "wall_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    write_report(out, markdown(report), report)
    write_chart(measured, out.with_suffix(".png"))
    return report


if __name__ == "__main__":
    main()
