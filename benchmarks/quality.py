"""Segmentation quality against torchvision: the same data, the same wall-clock budget on the
same cores, the same metric.

    python -m benchmarks.quality --data ../shared/data/camvid \\
        --torch-python /path/to/torch-env/bin/python

For each dataset (the embedded `synthetic_scenes`, and CamVid with `--data`), every model
trains from random initialisation (no pretrained weights: torchvision's cannot be downloaded
here) on the same training files for `--budget-minutes` of wall time, each in its own fresh
process with every core. tfdeeplab's models train with `tfdeeplab.training.train` and a time
budget (its schedule re-planned to end with the budget); torchvision's with its reference
recipe (see `benchmarks.torch_quality`). Every model then predicts every validation image at
its original resolution, and one function, `score`, scores all predictions with tfdeeplab's
metrics: mIoU, per-class IoU, mean boundary F1, pixel accuracy. The last model of each run is
scored (never a checkpoint picked on the validation images).

Writes `--out` (QUALITY.md), its JSON, and per dataset a PNG of per-class IoU bars and one of
predictions of every model on the same validation images.
"""

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.stats import generated_by, machine, percent, write_report
from benchmarks.worker import module_available, run_in_subprocess

MODELS = {
    "tfdeeplab": "tfdeeplab DeepLabV3 MobileNetV2 OS16",
    "tfdeeplab-pointrend": "tfdeeplab DeepLabV3 MobileNetV2 OS16 + PointRend",
    "torchvision-mobilenet-v3": "torchvision deeplabv3_mobilenet_v3_large",
    "torchvision-mobilenet-v3-bn": "torchvision deeplabv3_mobilenet_v3_large, BN momentum 0.1",
    "torchvision-resnet50": "torchvision deeplabv3_resnet50",
}
# torchvision's models: (architecture, BatchNorm momentum in PyTorch's convention; None keeps
# torchvision's: 0.01 in its MobileNetV3, 0.1 in ResNet). tfdeeplab's `train` uses 0.1 too
# (0.9 in Keras' convention).
TORCH_MODELS = {
    "torchvision-mobilenet-v3": ("mobilenet_v3", None),
    "torchvision-mobilenet-v3-bn": ("mobilenet_v3", 0.1),
    "torchvision-resnet50": ("resnet50", None),
}
DEFAULT_MODELS = ("tfdeeplab", "tfdeeplab-pointrend", "torchvision-mobilenet-v3")
# Training crop and batch per dataset; 32·k + 1 crops suit tfdeeplab's corner-aligned models.
DATASETS = {
    "synthetic": {"image_size": 193, "batch_size": 8},
    "camvid": {"image_size": 257, "batch_size": 8},
}
SYNTHETIC = {"count": 300, "num_classes": 6, "seed": 0, "val_fraction": 0.1}


def tfdeeplab_quality_job(job):
    """Trains one tfdeeplab model for the budget (`tfdeeplab.training.train`) and predicts the
    validation images at their original size (a `benchmarks.worker` target)."""
    import keras

    from benchmarks.worker import set_tf_threads
    from tfdeeplab.training import TrainConfig, train

    set_tf_threads(job["threads"])
    config = TrainConfig(**job["config"])
    summary = train(config)
    model = keras.saving.load_model(summary["final_model"])
    predictions = [
        np.argmax(model.predict(_read_rgb(path)[None], verbose=0)[0], -1).astype(np.uint8)
        for path in job["val_images"]
    ]
    np.savez_compressed(job["predictions"], *predictions)
    return {
        "steps": summary["steps_run"],
        "planned_steps": summary["planned_steps"],
        "epochs": summary["epochs_run_this_time"],
        "train_seconds": summary["wall_seconds"],
        "train_images_per_second": summary["train_images_per_second"],
        "predictions": job["predictions"],
    }


def _read_rgb(path):
    from PIL import Image

    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), np.float32)


def _read_mask(path):
    from PIL import Image

    with Image.open(path) as picture:
        return np.asarray(picture)


def score(predictions, masks, class_names, ignore_label=255):
    """The one scoring function of the benchmark: tfdeeplab's confusion matrix, boundary
    counts (2-pixel tolerance) and `segmentation_report` over all images at their original
    size."""
    from tfdeeplab.metrics import boundary_counts, confusion_matrix, segmentation_report

    count = len(class_names)
    confusion = np.zeros((count, count), np.int64)
    boundaries = np.zeros((count, 4), np.int64)
    for prediction, mask in zip(predictions, masks, strict=True):
        if prediction.shape != mask.shape:
            raise ValueError(f"a prediction of shape {prediction.shape} for a {mask.shape} mask")
        confusion += confusion_matrix(mask, prediction, count, ignore_label)
        boundaries += boundary_counts(mask[None], prediction[None], count, ignore_label)
    return {**segmentation_report(confusion, boundaries, class_names), "scored_by": "score"}


def _splits(name, args, work):
    """(data root, train folder, val folder, TrainConfig data settings) of a dataset."""
    from tfdeeplab.data import scan_split, synthetic_scenes

    settings = {"val_fraction": SYNTHETIC["val_fraction"], "seed": SYNTHETIC["seed"]}
    if name == "synthetic":
        root = work / "synthetic"
        if not (root / "classes.json").exists():
            size = args.image_size or DATASETS["synthetic"]["image_size"]
            count = args.synthetic_images
            synthetic_scenes(root, count, size, SYNTHETIC["num_classes"], seed=args.seed)
    else:
        if args.data is None:
            raise ValueError("--datasets camvid needs --data, e.g. ../shared/data/camvid")
        root = Path(args.data)
    train = scan_split(root, "train", settings["val_fraction"], settings["seed"])
    val = scan_split(root, "val", settings["val_fraction"], settings["seed"])
    return root, train, val, settings


def _shape(args, dataset):
    """The crop and batch of a dataset's training runs."""
    shape = dict(DATASETS[dataset])
    if args.image_size:
        shape["image_size"] = args.image_size
    return shape


def _job(args, model, dataset, root, train, val, settings, work):
    predictions = str(work / f"{dataset}_{model}.npz")
    shape = _shape(args, dataset)
    common = {"threads": args.threads, "val_images": [str(p) for p in val.images]}
    common["predictions"] = predictions
    if model.startswith("torchvision"):
        return "benchmarks.torch_quality:torch_quality_job", {
            **common,
            **shape,
            "model": TORCH_MODELS[model][0],
            "bn_momentum": TORCH_MODELS[model][1],
            "train": [[str(p) for p in train.images], [str(p) for p in train.masks]],
            "num_classes": train.num_classes,
            "ignore_label": train.ignore_label,
            "budget_minutes": args.budget_minutes,
            "lr": args.torch_lr,
            "seed": args.seed,
        }
    config = {
        "data": str(root),
        "out": str(work / f"{dataset}_{model}"),
        "backbone": "mobilenetv2",
        "alpha": args.alpha,
        "output_stride": 16,
        "pointrend": model == "tfdeeplab-pointrend",
        "epochs": 1000,
        "time_budget_minutes": args.budget_minutes,
        "optimizer": args.tfdeeplab_optimizer,
        "lr": args.tfdeeplab_lr,
        "overwrite": True,
        "verbose": 2,
        **shape,
        **settings,
    }
    return "benchmarks.quality:tfdeeplab_quality_job", {**common, "config": config}


def grid_picks(count, wanted):
    """Indices of `wanted` validation images spread evenly over `count` (CamVid's are video
    frames: neighbours look alike)."""
    return sorted({int(i) for i in np.linspace(0, count - 1, min(wanted, count)).round()})


def run_dataset(args, dataset, work):
    """Trains, predicts and scores every model on one dataset."""
    root, train, val, settings = _splits(dataset, args, work)
    masks = [_read_mask(path) for path in val.masks]
    picks = grid_picks(len(val), args.grid_images)
    results = {}
    for model in args.models:
        target, job = _job(args, model, dataset, root, train, val, settings, work)
        torch = model.startswith("torchvision")
        print(f"[{dataset}] training {MODELS[model]} for {args.budget_minutes} min", flush=True)
        trained = run_in_subprocess(
            target,
            job,
            f"{MODELS[model]} on {dataset}",
            python=args.torch_python if torch else None,
            onednn=True,
        )
        with np.load(trained.pop("predictions")) as saved:
            predictions = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        scores = score(predictions, masks, list(val.class_names), val.ignore_label)
        results[model] = {"label": MODELS[model], "training": trained, "scores": scores}
        print(f"[{dataset}] {MODELS[model]}: mIoU {100 * scores['mean_iou']:.1f}", flush=True)
        results[model]["_predictions"] = [predictions[i] for i in picks]
    return {
        "data": str(root),
        "train_images": len(train),
        "val_images": len(val),
        "class_names": list(val.class_names),
        "colours": np.asarray(val.colours).tolist(),
        "grid_indices": picks,
        "val_paths": [str(val.images[i]) for i in picks],
        "val_mask_paths": [str(val.masks[i]) for i in picks],
        **_shape(args, dataset),
        "models": results,
    }


def markdown(report):
    """QUALITY.md: per dataset, a table of the models and their per-class IoU."""
    settings = report["settings"]
    lines = [
        "# Segmentation quality: tfdeeplab vs torchvision",
        "",
        f"{generated_by(report)}, "
        f"{settings['threads']} threads, in {report['wall_s'] / 60:.0f} min. Every model trains "
        f"from random initialisation for **{settings['budget_minutes']:g} minutes** of wall "
        "time on the same training files, then predicts every validation image at its "
        "original size; one function (`benchmarks.quality.score`, tfdeeplab's metrics) "
        "scores them all. tfdeeplab: `tfdeeplab.training.train` with "
        f"`--optimizer {settings['tfdeeplab_optimizer']} --lr {settings['tfdeeplab_lr']:g}`, "
        "a poly schedule re-planned to end with the budget, its own augmentation (random "
        "scale 0.5–2×, flip, crop, brightness/contrast). torchvision: its reference recipe "
        f"(SGD momentum 0.9, lr {settings['torch_lr']:g}, weight decay 1e-4, poly planned "
        "over the budget) and its reference augmentation (random resize 0.5–2×, flip, crop).",
        "",
    ]
    for name, dataset in report["datasets"].items():
        lines += [
            f"## {name}: {dataset['train_images']} training, {dataset['val_images']} "
            f"validation images; {dataset['image_size']}² crops, batch {dataset['batch_size']}",
            "",
            "| model | mIoU | mean boundary F1 | pixel accuracy | training images/s | steps "
            "| epochs |",
            "|---|---|---|---|---|---|---|",
        ]
        for result in dataset["models"].values():
            scores, trained = result["scores"], result["training"]
            speed = trained["train_images_per_second"]
            lines.append(
                f"| {result['label']} | {percent(scores['mean_iou'])} "
                f"| {percent(scores['mean_boundary_f1'])} "
                f"| {percent(scores['pixel_accuracy'])} "
                f"| {'—' if speed is None else f'{speed:.2f}'} | {trained['steps']} "
                f"| {trained['epochs']} |"
            )
        lines += ["", "IoU per class (%):", ""]
        models = list(dataset["models"].values())
        lines.append("| class | " + " | ".join(r["label"] for r in models) + " |")
        lines.append("|---" * (len(models) + 1) + "|")
        for index, class_name in enumerate(dataset["class_names"]):
            cells = [percent(r["scores"]["classes"][index]["iou"]) for r in models]
            lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
        lines += ["", f"![IoU per class](QUALITY_{name}_iou.png)", ""]
        lines += [f"![Predictions](QUALITY_{name}_predictions.png)", ""]
    return "\n".join(lines)


def pictures(report, folder):
    """Per dataset: IoU bars of every model, and a grid of image / truth / each prediction."""
    from tfdeeplab.plots import class_iou_bars, prediction_grid

    written = []
    for name, dataset in report["datasets"].items():
        models = dataset["models"]
        series = {
            r["label"]: [np.nan if c["iou"] is None else c["iou"] for c in r["scores"]["classes"]]
            for r in models.values()
        }
        title = f"IoU per class on {name} validation images"
        written.append(
            class_iou_bars(
                folder / f"QUALITY_{name}_iou.png", dataset["class_names"], series, title
            )
        )
        colours = np.asarray(dataset["colours"], np.uint8)
        rows = []
        for index, (image, mask) in enumerate(
            zip(dataset["val_paths"], dataset["val_mask_paths"], strict=True)
        ):
            truth = _read_mask(mask)
            drawn = colours[np.where(truth == 255, 0, truth)]
            drawn[truth == 255] = 255
            rows.append(
                [_read_rgb(image), drawn]
                + [colours[r["_predictions"][index]] for r in models.values()]
            )
        titles = ["image", "ground truth", *models]  # the short model names
        path = folder / f"QUALITY_{name}_predictions.png"
        written.append(prediction_grid(path, rows, titles, dataset["class_names"], colours))
    return written


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--datasets", nargs="+", choices=tuple(DATASETS), default=None,
        help="default: synthetic, and camvid when --data is given")  # fmt: skip
    add("--data", help="the CamVid folder (train/ and val/), e.g. ../shared/data/camvid")
    add("--models", nargs="+", choices=tuple(MODELS), default=list(DEFAULT_MODELS))
    add("--budget-minutes", type=float, default=8.0, help="training wall time per model")
    add("--threads", type=int, default=os.cpu_count())
    add("--seed", type=int, default=0)
    add("--tfdeeplab-optimizer", default="adamw", choices=("sgd", "adamw"))
    add("--tfdeeplab-lr", type=float, default=1e-3)
    add("--torch-lr", type=float, default=0.01, help="torchvision reference: 0.01 (SGD)")
    add("--torch-python", help="python of an environment with torch and torchvision")
    add("--image-size", type=int, help="training crop of every dataset; default per dataset")
    add("--alpha", type=float, default=1.0, help="tfdeeplab's MobileNetV2 width")
    add("--synthetic-images", type=int, default=SYNTHETIC["count"])
    add("--grid-images", type=int, default=4, help="validation images in the prediction PNG")
    add("--work", help="folder for runs and predictions; default: a temporary one")
    add("--out", default="benchmarks/QUALITY.md", help="the Markdown report; JSON and PNGs "
        "are written beside it")  # fmt: skip
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.datasets = args.datasets or (["synthetic", "camvid"] if args.data else ["synthetic"])
    torch_models = [m for m in args.models if m.startswith("torchvision")]
    if torch_models and not module_available("torchvision", args.torch_python):
        raise SystemExit(
            f"{', '.join(torch_models)} need torchvision: pass --torch-python with an "
            "environment that has torch and torchvision, or leave them out of --models"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work or temporary)
        work.mkdir(parents=True, exist_ok=True)
        datasets = {name: run_dataset(args, name, work) for name in args.datasets}
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "work")}
        report = {
            "machine": machine(),
            "settings": settings,
            "command": "python -m benchmarks.quality " + shlex.join(argv or sys.argv[1:]),
            "datasets": datasets,
            "wall_s": time.perf_counter() - started,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pictures(report, out.parent)  # reads the images, which may be in the work folder
    for dataset in datasets.values():
        for result in dataset["models"].values():
            result.pop("_predictions")
    write_report(out, markdown(report), report)
    return report


if __name__ == "__main__":
    main()
