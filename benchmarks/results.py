"""Writes benchmarks/RESULTS.md: four DeepLabV3 configurations in every format, measured in one run.

    python -m benchmarks.results --torch-python /tmp/peers/bin/python

For ResNet-50 at output stride 8 and 16, ResNet-50 OS16 + PointRend and MobileNetV2 OS16 (21
classes, untrained: latency does not depend on the weights), it exports the `.keras` model, a
SavedModel and TFLite fp32 / float16 / dynamic / int8 files at the measured size (int8
calibrated on `synthetic_scenes` images), skipping files a previous run already wrote, then
measures all of them with `benchmarks.latency` and the peers with `benchmarks.compare_peers`, and
writes the tables, the targets and a chart. Every number in RESULTS.md comes from this run.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from benchmarks import compare_peers, latency, training
from benchmarks.stats import Timing, add_timing_arguments
from benchmarks.worker import add_onednn_argument

CONFIGS = {
    "resnet50_os8": {"backbone": "resnet50", "output_stride": 8},
    "resnet50_os16": {"backbone": "resnet50", "output_stride": 16},
    "resnet50_os16_pointrend": {"backbone": "resnet50", "output_stride": 16, "pointrend": True},
    "mobilenetv2_os16": {"backbone": "mobilenetv2", "output_stride": 16},
}
TFLITE = ("fp32", "float16", "dynamic", "int8")
QUANTIZATION = {"fp32": "none", "float16": "float16", "dynamic": "dynamic", "int8": "int8"}
NUM_CLASSES = 21


def artifact_paths(work, name):
    folder = Path(work) / name
    return [
        folder / "model.keras",
        folder / "saved_model",
        *(folder / f"{mode}.tflite" for mode in TFLITE),
    ]


def export_all(work, size, calibration_steps, progress=print):
    """Exports every configuration's artifacts that do not exist yet; returns all paths."""
    import keras

    import converters
    from tfdeeplab import DeepLabV3
    from tfdeeplab.data import synthetic_scenes

    scenes = synthetic_scenes(Path(work) / "calibration_scenes", calibration_steps, size, 6)
    calibration = converters.calibration_dataset(scenes, (size, size), split=None)
    paths = []
    for name, config in CONFIGS.items():
        keras_path, saved_model, *tflite = artifact_paths(work, name)
        paths += [keras_path, saved_model, *tflite]
        if all(path.exists() for path in (keras_path, saved_model, *tflite)):
            continue
        keras.utils.set_random_seed(0)
        model = DeepLabV3(NUM_CLASSES, **config)
        keras_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if not keras_path.exists():
            model.save(keras_path)
        if not saved_model.exists():
            converters.export_saved_model(model, saved_model)
        for mode, path in zip(TFLITE, tflite, strict=True):
            if not path.exists():
                converters.export_tflite(
                    model,
                    path,
                    quantization=QUANTIZATION[mode],
                    input_size=(size, size),
                    representative_data=calibration if mode == "int8" else None,
                    calibration_steps=calibration_steps,
                )
        progress(f"exported {name} in {time.perf_counter() - started:.0f} s")
        keras.backend.clear_session()
    return paths


def _row(report, name, fmt):
    label = f"{name}/{fmt}"
    return next(row for row in report["results"] if row["label"] == label)


def targets(report, peers):
    """The issue's targets, computed from the measured rows."""
    lines = []
    for name in CONFIGS:
        fp32, int8 = _row(report, name, "fp32.tflite"), _row(report, name, "int8.tflite")
        speedup = fp32["runs"]["p50_ms"] / int8["runs"]["p50_ms"]
        verdict = "met" if speedup >= 2.5 else "not met"
        lines.append(
            f"- {name}: TFLite int8 is {speedup:.2f}× faster than TFLite fp32 (p50; target "
            f"≥ 2.5×: {verdict})."
        )
    resnet = [row for row in report["results"] if row["label"].startswith("resnet50")]
    for precision in ("fp32", "int8"):
        rows = [row for row in resnet if row["precision"] == precision]
        best = max(rows, key=lambda row: row["fraction_of_peak"])
        verdict = "met" if best["fraction_of_peak"] >= 0.6 else "not met"
        peak = _peak_text(report, precision)
        lines.append(
            f"- Best {precision} ResNet-50 artifact: {best['label']} ({best['kind']}) at "
            f"{best['gflops_per_s']:.1f} GOP/s, {100 * best['fraction_of_peak']:.0f}% of the "
            f"measured {peak} (target ≥ 60%: {verdict})."
        )
    rows = {row["name"]: row for row in peers["results"]} if peers else {}
    ours, torch = rows.get("tfdeeplab ResNet-50 OS8"), rows.get("torchvision deeplabv3_resnet50")
    if ours and torch:
        ratio = ours["runs"]["p50_ms"] / torch["runs"]["p50_ms"]
        lines.append(
            f"- Keras fp32 ResNet-50 OS8 at {ours['input_size']}: {ratio:.2f}× torchvision "
            f"deeplabv3_resnet50's p50 latency (target ≤ 1.00: "
            f"{'met' if ratio <= 1 else 'not met'})."
        )
    else:
        lines.append("- torchvision was not measured in this run (not installed).")
    return "\n".join(lines)


def _peak_text(report, precision):
    """The matmul peak a precision's rows are measured against, in words."""
    if precision == "int8" and "matmul_int8_peak_gops" in report:
        return f"{report['matmul_int8_peak_gops']:.1f} GOP/s int8 matmul peak"
    return f"{report['matmul_peak_gflops']:.1f} GFLOP/s float32 matmul peak"


def _onednn_text(settings, machine):
    if "onednn" in settings:
        return "on" if settings["onednn"] else "off"
    # Reports written before the harness set it: the environment variable as recorded then.
    unset = "off (TF_ENABLE_ONEDNN_OPTS unset: TF's default without AVX-512)"
    return machine.get("tf_onednn_opts", unset)


def _keep_training_section(path, text):
    """`text` with the training section of the RESULTS.md at `path`, which another run
    (`benchmarks.training`) wrote."""
    old = Path(path).read_text() if Path(path).exists() else ""
    section = training.section_of(old)
    return training.replace_section(text, section) if section else text


def _machine_header(report):
    """The bullet lines on the machine, the peaks and the settings."""
    machine = report["machine"]
    settings = report["settings"]
    height, width = settings["input_size"]
    matmul = report["matmul_gflops"]
    return "\n".join(
        [
            f"- Machine: {machine['cpu']}, {machine['cores']} cores; TensorFlow "
            f"{machine['tensorflow']}, Keras {machine['keras']}, LiteRT "
            f"{machine['ai-edge-litert']}; CPU flags "
            f"{', '.join(machine.get('cpu_flags', [])) or 'not recorded'}; TensorFlow's oneDNN "
            f"kernels {_onednn_text(settings, machine)}.",
            f"- float32 matmul peak measured by the harness: "
            f"{report['matmul_peak_gflops']:.1f} GFLOP/s ({settings['threads']} threads; "
            f"TensorFlow {matmul['tensorflow']:.1f}, XNNPACK {matmul['xnnpack']:.1f}); int8 "
            f"matmul peak (XNNPACK, int8 FULLY_CONNECTED): "
            f"{report.get('matmul_int8_peak_gops', float('nan')):.1f} GOP/s.",
            f"- Input {height}×{width}, batch {settings['batch']}, {settings['threads']} "
            f"threads (TFLite num_threads, TF intra/inter-op), timing "
            f"{json.dumps(settings['timing'])}; 21 classes.",
        ]
    )


def write_results(path, report, peers, command, wall_s):
    chart = Path(path).with_suffix(".png")
    latency.write_chart(report, chart)
    header = _machine_header(report)
    text = f"""# Benchmark results

Generated by `benchmarks/results.py` in one run ({wall_s / 60:.0f} min); nothing here is typed by
hand. Ratios between rows are what to compare: absolute times drift on shared machines.

{header}
- Command: `{command}`

## Every artifact

Init is loading (and for Keras, tracing); first is the first inference; mean/std/p50/p95 are
over the timed runs. Peak RSS is the measuring subprocess's; TensorFlow's own libraries account
for about 600 MiB of the Keras and SavedModel rows. GFLOP/s is 2 × MACs / p50 (operations per
second for integer files); % peak is against the matmul peak of the row's precision above
(int8 for int8 and dynamic-range files, float32 for the others). "XNNPACK partitions" 1 means
XNNPACK runs the whole graph.

{latency.markdown_table(report)}

![latency chart]({chart.name})

## Against peers

{compare_peers.markdown_table(peers) if peers else "Not measured in this run."}

## Targets

{targets(report, peers)}
"""
    from tfdeeplab.atomic import atomic_write_bytes

    atomic_write_bytes(path, _keep_training_section(path, text).encode())
    atomic_write_bytes(
        Path(path).with_suffix(".json"),
        json.dumps(
            {"artifacts": report, "peers": peers, "command": command, "wall_s": wall_s}, indent=2
        ).encode(),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/benchmark_artifacts", help="artifact folder")
    parser.add_argument("--input-size", type=int, default=513)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-steps", type=int, default=8)
    add_timing_arguments(parser, min_secs=5.0, max_secs=60.0)
    add_onednn_argument(parser)
    parser.add_argument("--torch-python", help="python of an environment with torchvision")
    compare_peers.add_peer_tflite_argument(parser)
    parser.add_argument("--no-peers", action="store_true", help="skip compare_peers")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument(
        "--render", action="store_true", help="rewrite --out from its .json, measuring nothing"
    )
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.out).with_suffix(".json").read_text())
        fields = ("artifacts", "peers", "command", "wall_s")
        write_results(args.out, *(saved[field] for field in fields))
        print(f"wrote {args.out}")
        return
    argv = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.results", *argv])
    started = time.perf_counter()
    paths = export_all(args.work, args.input_size, args.calibration_steps)
    timing = Timing.from_args(args).as_dict()
    size = (args.input_size, args.input_size)
    report = latency.benchmark(paths, size, 1, args.threads, timing, onednn=args.onednn)
    peers = None
    if not args.no_peers:
        peers = compare_peers.compare(
            args.input_size, 1, args.threads, timing, args.torch_python, onednn=args.onednn,
            peer_tflites=args.peer_tflite,
        )  # fmt: skip
    write_results(args.out, report, peers, command, time.perf_counter() - started)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
