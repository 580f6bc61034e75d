"""A recipe on real photos: DeepLabV3-MobileNetV2 from scratch on CamVid, on a CPU budget.

    python -m benchmarks.camvid_recipe --data ../shared/data/camvid --minutes 45

Runs the three `tfdeeplab` commands a user would (`train` with `RECIPE` and the time budget,
`evaluate` of `final.keras` on the `val/` split at the photos' own 480×360 resolution, `show`)
in fresh processes, then writes `--out` (Markdown), its JSON, and beside them the IoU chart,
the prediction grid and the training curve as PNGs. No weights are downloaded: the backbone
starts from random values. A finished run folder in `--work` is reused (`train` never
overwrites one), so the report can be redrawn without training again.

The published CamVid figures the report quotes are context, not a ranking: they are on the
233-image test split with ImageNet-initialised encoders and GPU training; ours are on the
101-image val split, from scratch, on the machine's CPU cores.
"""

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.stats import generated_by, machine, percent, write_report

RECIPE = [
    "--backbone", "mobilenetv2", "--image-size", "257", "--batch-size", "8",
    "--optimizer", "adamw", "--lr", "0.001", "--epochs", "100", "--steps-per-epoch", "150",
]  # fmt: skip

# (model, class-average IoU %, source): CamVid test split, 11 classes.
PUBLISHED = [
    ("SegNet", 55.6, "ENet paper, arXiv:1606.02147, Table 3"),
    ("ENet", 51.3, "ENet paper, arXiv:1606.02147, Table 3"),
    ("Bayesian SegNet", 63.1, "arXiv:1511.02680, Table 2"),
]

PICTURES = {
    "evaluation.png": "_iou.png",
    "predictions.png": "_predictions.png",
    "training_curve.png": "_curve.png",
}


def _tfdeeplab(arguments, log):
    """Runs `tfdeeplab ARGUMENTS` in a fresh interpreter, its output appended to `log`."""
    command = [sys.executable, "-m", "tfdeeplab.cli", *arguments]
    print("$ tfdeeplab " + shlex.join(arguments), flush=True)
    with open(log, "a") as output:
        finished = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
    if finished.returncode != 0:
        tail = Path(log).read_text().splitlines()[-5:]
        ending = "\n".join(tail)
        raise RuntimeError(f"tfdeeplab {arguments[0]} failed; the end of {log}:\n{ending}")


def run_recipe(data, run, minutes):
    """Trains (unless `run` holds a finished run), evaluates and draws predictions.

    Returns the commands, as a user would type them."""
    run.mkdir(parents=True, exist_ok=True)
    log = run / "recipe.log"
    model, grid = str(run / "final.keras"), str(run / "predictions.png")
    commands = [
        ["train", "--data", data, "--out", str(run), *RECIPE, "--time-budget-minutes", minutes],
        ["evaluate", "--model", model, "--data", data, "--json", str(run / "evaluation.json")],
        ["show", "--model", model, "--data", data, "--count", "6", "--out", grid],
    ]
    outputs = ["summary.json", "evaluation.json", "predictions.png"]
    for arguments, output in zip(commands, outputs, strict=True):
        if not (run / output).exists():
            _tfdeeplab(arguments, log)
    return ["tfdeeplab " + shlex.join(arguments) for arguments in commands]


def _training_row(summary):
    return {
        "minutes": summary["wall_seconds"] / 60,
        "steps": summary["steps_run"],
        "images_per_second": summary["train_images_per_second"],
        "best_val_mean_iou": summary["best_val_mean_iou"],
        "final_val_mean_iou": summary["final_val_mean_iou"],
    }


def markdown(report):
    evaluation, training = report["evaluation"], report["training"]
    stem = report["stem"]
    lines = [
        "# CamVid: DeepLabV3-MobileNetV2 from scratch on a CPU budget",
        "",
        f"{generated_by(report)}, {report['machine']['cores']} cores. The run's commands:",
        "",
        "```bash",
        *report["commands"],
        "```",
        "",
        f"Training: {training['minutes']:.0f} min, {training['steps']} steps of 8 crops "
        f"(257², random scale 0.5–2, flips, colour jitter), {training['images_per_second']:.1f} "
        "images/s, validation included; no pretrained weights. Evaluation: `final.keras` (the "
        "model the schedule ends with, not a checkpoint picked on these images) on the "
        f"{evaluation['images']} `val/` photos at their own 480×360 resolution, single scale.",
        "",
        f"**mIoU {percent(evaluation['mean_iou'])}**, pixel accuracy "
        f"{percent(evaluation['pixel_accuracy'])}, mean boundary F1 "
        f"{percent(evaluation['mean_boundary_f1'])} (percent).",
        "",
        "| class | IoU | precision | recall | boundary F1 | pixels |",
        "|---|---|---|---|---|---|",
    ]
    for row in evaluation["classes"]:
        lines.append(
            f"| {row['name']} | {percent(row['iou'])} | {percent(row['precision'])} "
            f"| {percent(row['recall'])} | {percent(row['boundary_f1'])} | {row['pixels']} |"
        )
    lines += [
        "",
        "Published CamVid figures (class-average IoU, %), for context: the 233-image test "
        "split, encoders initialised from ImageNet, GPU training; not the same split, "
        "initialisation or budget as ours.",
        "",
        "| model | class IoU | source |",
        "|---|---|---|",
        *(f"| {name} | {iou:.1f} | {source} |" for name, iou, source in PUBLISHED),
        "",
        f"![IoU per class]({stem}_iou.png)",
        "",
        f"![Predictions on val photos]({stem}_predictions.png)",
        "",
        f"![Training curve]({stem}_curve.png)",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/camvid", help="CamVid, our layout")
    parser.add_argument("--minutes", default="45", help="train's --time-budget-minutes")
    parser.add_argument("--work", default="runs/camvid_recipe", help="the run folder (reused)")
    parser.add_argument("--out", default="benchmarks/CAMVID_RECIPE.md")
    args = parser.parse_args(argv)
    if not (Path(args.data) / "val").is_dir():
        raise SystemExit(f"--data {args.data}: no val/ split (CamVid in our folder layout)")
    run, out = Path(args.work), Path(args.out)
    commands = run_recipe(args.data, run, args.minutes)
    summary = json.loads((run / "summary.json").read_text())
    evaluation = json.loads((run / "evaluation.json").read_text())
    report = {
        "machine": machine(),
        "command": "python -m benchmarks.camvid_recipe " + shlex.join(argv or sys.argv[1:]),
        "commands": commands,
        "stem": out.stem,
        "training": _training_row(summary),
        "evaluation": evaluation,
        "published": PUBLISHED,
        "generated": time.strftime("%Y-%m-%d"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, suffix in PICTURES.items():
        shutil.copyfile(run / name, out.with_name(out.stem + suffix))
    write_report(out, markdown(report), report)
    return report


if __name__ == "__main__":
    main()
