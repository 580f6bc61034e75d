"""torchvision's DeepLabV3 models imported with `tfdeeplab.from_torchvision`, against
torchvision's own: the same weights, the same input size and threads, one run.

    python -m benchmarks.compare_imported --torch-python /path/to/torch-env/bin/python \\
        --input-size 520 --threads 2

For each architecture (`--archs`), the weights are the fixture's seeded ones
(`benchmarks.torchvision_fixture`: no download; latency does not depend on their values):
- torchvision eager (`torch.inference_mode`) in the torch environment;
- the imported Keras model, its TFLite fp32 file and an int8 file calibrated on synthetic
  scenes, each measured by `benchmarks.latency` in its own process;
- the int8 file's argmax agreement with Keras and its size, on the scenes' validation images
  (`converters.verify`).
Latency is given as p50 and as a ratio to torchvision eager. Writes `--out` (Markdown) and its
JSON.
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import torchvision_fixture as fixture
from benchmarks.stats import (
    Timing,
    add_timing_arguments,
    generated_by,
    machine,
    time_runs,
    write_report,
)
from benchmarks.worker import module_available, run_in_subprocess

SCENES = {"count": 24, "num_classes": 6, "seed": 0, "val_fraction": 0.25}


def seeded_weights(arch, folder):
    """The fixture's seeded state dict of `arch`, written as an .npz (both sides read it)."""
    meta = json.loads((fixture.FOLDER / f"{arch}.json").read_text())
    path = Path(folder) / f"{arch}.npz"
    np.savez(path, **fixture.seeded_state_dict(meta["shapes"], meta["gain"]))
    return path


def torch_job(job):
    """torchvision eager latency with the .npz weights (runs in the torch environment)."""
    import torch
    import torchvision

    torch.set_num_threads(job["threads"])
    builder = getattr(torchvision.models.segmentation, job["arch"])
    model = builder(weights=None, weights_backbone=None, num_classes=fixture.NUM_CLASSES)
    with np.load(job["weights"]) as saved:
        state = {k: torch.from_numpy(saved[k]) for k in saved.files}
    model.load_state_dict(state, strict=False)  # the fixture also holds aux_classifier keys
    model.eval()
    size = job["input_size"]
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, size, size)).astype(np.float32)
    inputs = torch.from_numpy(image)

    def run():
        with torch.inference_mode():
            return model(inputs)["out"].numpy()

    return time_runs(run, **job["timing"])


def export_job(job):
    """The imported model as .keras, TFLite fp32 and int8 (calibrated on the scenes), and the
    int8 file's verification on the scenes' validation images."""
    from benchmarks.worker import set_tf_threads

    set_tf_threads(job["threads"])
    from converters import calibration_dataset, export_tflite, verify
    from tfdeeplab.callbacks import save_model_atomically
    from tfdeeplab.torchvision_port import from_torchvision

    folder, size = Path(job["folder"]), (job["input_size"],) * 2
    model = from_torchvision(job["arch"], job["weights"])
    paths = {"keras": save_model_atomically(model, folder / f"{job['arch']}.keras")}
    paths["fp32"] = export_tflite(model, folder / f"{job['arch']}_fp32.tflite", input_size=size)
    settings = {"val_fraction": SCENES["val_fraction"], "seed": SCENES["seed"]}
    train = calibration_dataset(job["scenes"], size, "train", **settings)
    paths["int8"] = export_tflite(
        model, folder / f"{job['arch']}_int8.tflite", "int8", size, train, job["calibration"]
    )
    val = calibration_dataset(job["scenes"], size, "val", shuffle=False, **settings)
    report = verify(paths["int8"], model, val.map(lambda image, mask: image))
    return {
        "paths": {k: str(v) for k, v in paths.items()},
        "int8_agreement": report.agreement,
        "int8_images": report.images,
        "size_bytes": {k: Path(v).stat().st_size for k, v in paths.items()},
    }


def compare_arch(args, arch, work):
    from benchmarks.latency import benchmark

    weights = seeded_weights(arch, work)
    timing = Timing.from_args(args).as_dict()
    job = {"arch": arch, "weights": str(weights), "threads": args.threads,
           "input_size": args.input_size, "timing": timing}  # fmt: skip
    torch = run_in_subprocess(
        "benchmarks.compare_imported:torch_job", job, f"torchvision {arch}", args.torch_python
    )
    job.update(folder=str(work), scenes=str(work / "scenes"), calibration=args.calibration)
    exported = run_in_subprocess("benchmarks.compare_imported:export_job", job, f"export {arch}")
    size = (args.input_size, args.input_size)
    measured = benchmark(list(exported["paths"].values()), size, 1, args.threads, timing)
    reference = torch["runs"]["p50_ms"]
    rows = {"torchvision eager": {"p50_ms": reference, "size_bytes": None}}
    for kind, row in zip(exported["paths"], measured["results"], strict=True):
        rows[f"tfdeeplab {kind}"] = {
            "p50_ms": row["runs"]["p50_ms"],
            "size_bytes": exported["size_bytes"][kind],
            "macs": row["macs"],
        }
    for row in rows.values():
        row["ratio"] = row["p50_ms"] / reference
    print(f"{arch}: " + ", ".join(f"{k} {v['p50_ms']:.0f} ms" for k, v in rows.items()))
    return {
        "rows": rows,
        "int8_agreement": exported["int8_agreement"],
        "int8_images": exported["int8_images"],
        "matmul_peak_gflops": measured["matmul_peak_gflops"],
    }


def markdown(report):
    settings = report["settings"]
    lines = [
        "# torchvision's DeepLabV3 imported with `from_torchvision`, against torchvision",
        "",
        f"{generated_by(report)}, {settings['threads']} threads, {settings['input_size']}² "
        f"input, batch 1, in {report['wall_s'] / 60:.0f} min. Same (seeded) weights on both "
        "sides; TFLite int8 calibrated on synthetic scenes, its agreement with Keras measured "
        "on their validation images.",
        "",
        "| arch | runtime | p50 ms | × torchvision eager | file MB | int8 agreement |",
        "|---|---|---|---|---|---|",
    ]
    for arch, result in report["archs"].items():
        for name, row in result["rows"].items():
            size = "" if row["size_bytes"] is None else f"{row['size_bytes'] / 2**20:.1f}"
            agreement = ""
            if name.endswith("int8"):
                agreement = (
                    f"{100 * result['int8_agreement']:.2f}% ({result['int8_images']} images)"
                )
            lines.append(
                f"| {arch} | {name} | {row['p50_ms']:.1f} | {row['ratio']:.2f} | {size} "
                f"| {agreement} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", choices=fixture.ARCHS, default=list(fixture.ARCHS))
    parser.add_argument("--torch-python", required=True, help="python with torchvision")
    parser.add_argument("--input-size", type=int, default=520)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--calibration", type=int, default=16, help="int8 calibration images")
    parser.add_argument("--out", default="benchmarks/IMPORTED.md")
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    if not module_available("torchvision", args.torch_python):
        raise SystemExit(f"--torch-python {args.torch_python} has no torchvision")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        from tfdeeplab.data import synthetic_scenes

        synthetic_scenes(work / "scenes", SCENES["count"], args.input_size,
                         SCENES["num_classes"], seed=SCENES["seed"])  # fmt: skip
        archs = {arch: compare_arch(args, arch, work) for arch in args.archs}
    report = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "command": "python -m benchmarks.compare_imported " + shlex.join(argv or sys.argv[1:]),
        "archs": archs,
        "wall_s": time.perf_counter() - started,
    }
    write_report(Path(args.out), markdown(report), report)
    return report


if __name__ == "__main__":
    main()
