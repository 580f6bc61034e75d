"""Does the demo's recipe generalise? The same settings on other scenes and other crops.

    python -m benchmarks.demo_recipe --seeds 1 2 3 --sizes 256 321

Each run is `tfdeeplab demo`'s data, training and evaluation stages
(`tfdeeplab.demo.run_recipe`): the demo's defaults and time budget, scenes generated at the
crop size, `final.keras` (the model the schedule ends with, never a checkpoint picked on the
validation images) scored on the run's own validation split. One run per seed of
`synthetic_scenes` at the demo's crop, and one per extra crop size at the demo's seed; each in
a fresh process with every core, one after another. Every run uses the same settings: nothing
is tuned on the images it is scored on. Finished runs in `--work` are reused.

Writes `--out` (DEMO_RECIPE.md), its JSON and a PNG of IoU per class per run.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

from benchmarks.stats import generated_by, machine, percent, write_report
from benchmarks.worker import run_in_subprocess


def recipe_job(job):
    """One run of the demo's stages (a `benchmarks.worker` target)."""
    from tfdeeplab.config import DemoConfig, demo_training
    from tfdeeplab.demo import run_recipe

    config = DemoConfig(
        out=job["out"],
        num_images=job["num_images"],
        training=demo_training(**job["training"]),
        verbose=2,
    )
    summary, evaluation = run_recipe(config)
    keep = ("steps_run", "planned_steps", "wall_seconds", "train_images_per_second")
    return {"training": {k: summary[k] for k in keep}, "evaluation": evaluation}


def runs(args):
    """{name: (seed, crop)}: the seeds at the demo's crop, then the other crops."""
    from tfdeeplab.config import DEMO_TRAINING

    crop = DEMO_TRAINING["image_size"]
    wanted = [(seed, crop) for seed in args.seeds] + [(args.base_seed, s) for s in args.sizes]
    return {f"seed{seed}_{size}": (seed, size) for seed, size in wanted}


def _training_settings(args, seed, size):
    settings = {"seed": seed, "image_size": size}
    for name in ("time_budget_minutes", "alpha", "batch_size", "epochs", "steps_per_epoch"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    return settings


def run_all(args, work):
    results = {}
    for name, (seed, size) in runs(args).items():
        print(f"[{name}] the demo's recipe on seed-{seed} scenes at {size}²", flush=True)
        job = {
            "out": str(work / name),
            "num_images": args.num_images,
            "training": _training_settings(args, seed, size),
        }
        result = run_in_subprocess(
            "benchmarks.demo_recipe:recipe_job", job, f"the demo's recipe, {name}", onednn=True
        )
        results[name] = {"seed": seed, "image_size": size, **result}
        print(f"[{name}] mIoU {100 * result['evaluation']['mean_iou']:.1f}", flush=True)
    return results


def markdown(report):
    """DEMO_RECIPE.md: one row per run, then IoU per class."""
    results = report["runs"]
    lines = [
        "# The demo's recipe on other scenes and crops",
        "",
        f"{generated_by(report)}, "
        f"{report['machine']['cores']} cores, in {report['wall_s'] / 60:.0f} min. Each run is "
        "`tfdeeplab demo`'s data, training and evaluation with its default settings (only "
        "the seed or the crop differs); `final.keras` scored on that run's own validation "
        "images.",
        "",
        "| run | seed | crop | mIoU | mean boundary F1 | pixel accuracy | min class IoU "
        "| steps | training min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results.items():
        evaluation, training = run["evaluation"], run["training"]
        ious = [c["iou"] for c in evaluation["classes"] if c["iou"] is not None]
        lines.append(
            f"| {name} | {run['seed']} | {run['image_size']}² "
            f"| {percent(evaluation['mean_iou'])} "
            f"| {percent(evaluation['mean_boundary_f1'])} "
            f"| {percent(evaluation['pixel_accuracy'])} | {percent(min(ious, default=None))} "
            f"| {training['steps_run']} | {training['wall_seconds'] / 60:.1f} |"
        )
    names = [c["name"] for c in next(iter(results.values()))["evaluation"]["classes"]]
    lines += ["", "IoU per class (%):", "", "| class | " + " | ".join(results) + " |"]
    lines.append("|---" * (len(results) + 1) + "|")
    for index, class_name in enumerate(names):
        cells = [percent(r["evaluation"]["classes"][index]["iou"]) for r in results.values()]
        lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
    lines += ["", "![IoU per class](DEMO_RECIPE.png)", ""]
    return "\n".join(lines)


def picture(report, path):
    import numpy as np

    from tfdeeplab.plots import class_iou_bars

    results = report["runs"]
    names = [c["name"] for c in next(iter(results.values()))["evaluation"]["classes"]]
    series = {
        name: [np.nan if c["iou"] is None else c["iou"] for c in r["evaluation"]["classes"]]
        for name, r in results.items()
    }
    return class_iou_bars(path, names, series, "The demo's recipe: IoU per class per run")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--seeds", nargs="*", type=int, default=[1, 2, 3], help="scene seeds at the demo's crop")
    add("--sizes", nargs="*", type=int, default=[256, 321], help="other crops, at --base-seed")
    add("--base-seed", type=int, default=0, help="the demo's seed")
    add("--num-images", type=int, default=300, help="generated scenes per run (the demo's)")
    add("--time-budget-minutes", type=float, help="default: the demo's")
    add("--alpha", type=float, help="default: the demo's")
    add("--batch-size", type=int, help="default: the demo's")
    add("--epochs", type=int, help="default: the demo's")
    add("--steps-per-epoch", type=int, help="default: the demo's")
    add("--work", default="runs/demo_recipe", help="run folders (finished ones are reused)")
    add("--out", default="benchmarks/DEMO_RECIPE.md", help="Markdown; JSON and PNG beside it")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not runs(args):
        raise SystemExit("nothing to run: give --seeds and/or --sizes")
    started = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = run_all(args, work)
    report = {
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "command": "python -m benchmarks.demo_recipe " + shlex.join(argv or sys.argv[1:]),
        "runs": results,
        "wall_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture(report, out.with_suffix(".png"))
    write_report(out, markdown(report), report)
    return report


if __name__ == "__main__":
    main()
