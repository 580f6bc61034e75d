"""The main job end to end: data → `model.fit` → evaluation → verified exports → latency → report.

`tfdeeplab demo` runs it with defaults sized for about 15 minutes on 2 CPU cores; its options
point the same pipeline at a user's folder, backbone, size and budget. The output folder holds:

    data/                generated synthetic_scenes (unless --data)
    train/               the training run (best.keras, history.csv, training_curve.png, backup/)
    evaluation.json      per-class IoU, precision, recall, boundary F1 of best.keras (val split)
    evaluation.png       IoU per class (bars)
    predictions.png      image / ground truth / prediction rows
    export/              saved_model/, model_fp32.tflite, model_int8.tflite (model_qat.tflite
                         with --qat), each with <artifact>.verification.json
    latency.json, latency.png   every artifact measured by benchmarks.latency
    REPORT.md            written last: a folder with it holds a finished demo

Every stage whose outputs exist is skipped when the demo runs again, and training resumes from
its last finished epoch (BackupAndRestore), so a killed demo continues where it stopped. A
finished demo is not overwritten without `overwrite=True`.
"""

import dataclasses
import json
import platform
import shlex
import shutil
import time
from pathlib import Path

import keras

from tfdeeplab.atomic import atomic_write_bytes
from tfdeeplab.training import RunExistsError, TrainConfig, train


@dataclasses.dataclass
class DemoConfig:
    """Settings of `tfdeeplab demo` (its command-line options)."""

    out: str = "runs/demo"
    data: str | None = None
    num_images: int = 300
    num_classes: int = 6
    backbone: str = "mobilenetv2"
    alpha: float = 1.0
    output_stride: int = 16
    pointrend: bool = True
    image_size: int = 193
    batch_size: int = 8
    epochs: int = 6
    steps_per_epoch: int | None = None
    lr: float | None = None
    optimizer: str = "adamw"
    train_minutes: float | None = 10.0
    calibration_steps: int = 50
    verify_images: int | None = None
    qat: bool = False
    qat_epochs: int = 1
    benchmark_runs: int = 20
    threads: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    overwrite: bool = False
    verbose: int | str = "auto"

    def __post_init__(self):
        from tfdeeplab.backbones import BACKBONES

        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone={self.backbone!r} is not supported; choose one of {sorted(BACKBONES)}"
            )
        if not 2 <= self.num_classes <= 255:
            raise ValueError(f"num_classes={self.num_classes} must be an integer from 2 to 255")
        for name in ("num_images", "image_size", "batch_size", "epochs", "benchmark_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be ≥ 1")


class _Stages:
    """Times the stages and prints where the demo is."""

    def __init__(self):
        self.seconds = {}

    def run(self, name, function, *args):
        print(f"\n== {name} ==", flush=True)
        start = time.perf_counter()
        result = function(*args)
        self.seconds[name] = time.perf_counter() - start
        return result


def _prepare(config):
    out = Path(config.out)
    report = out / "REPORT.md"
    if report.exists():
        if not config.overwrite:
            raise RunExistsError(
                f"{out} holds a finished demo ({report}); choose another --out or pass --overwrite"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _data(config, out):
    from tfdeeplab.data import synthetic_scenes

    if config.data:
        root = Path(config.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root}: no such folder")
        print(f"Using {root}")
        return root
    root = out / "data"
    done = root / "classes.json"
    if done.exists() and len(list((root / "masks").glob("*.png"))) == config.num_images:
        print(f"{root}: {config.num_images} generated scenes already there")
        return root
    synthetic_scenes(
        root, config.num_images, config.image_size, config.num_classes, seed=config.seed
    )
    print(f"Generated {config.num_images} scenes of {config.image_size}² in {root}")
    return root


def _train(config, data, out):
    folder = out / "train"
    summary = folder / "summary.json"
    if summary.exists():
        print(f"{folder}: training already finished")
        return json.loads(summary.read_text())
    return train(
        TrainConfig(
            data=str(data),
            out=str(folder),
            backbone=config.backbone,
            output_stride=config.output_stride,
            alpha=config.alpha,
            pointrend=config.pointrend,
            image_size=config.image_size,
            batch_size=config.batch_size,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            lr=config.lr,
            optimizer=config.optimizer,
            val_fraction=config.val_fraction,
            seed=config.seed,
            time_budget_minutes=config.train_minutes,
            verbose=config.verbose,
        )
    )


def _val_data(config, data, size, batch_size=4):
    from tfdeeplab.data import make_dataset, scan_split

    folder = scan_split(data, "val", config.val_fraction, config.seed)
    dataset = make_dataset(folder, size, batch_size, augment=False, shuffle=False)
    return folder, dataset


def _evaluate(config, model, data, out):
    from tfdeeplab.inference import evaluate
    from tfdeeplab.metrics import format_report
    from tfdeeplab.plots import evaluation_chart

    path = out / "evaluation.json"
    if path.exists():
        report = json.loads(path.read_text())
    else:
        size = (config.image_size, config.image_size)
        folder, dataset = _val_data(config, data, size)
        progress = keras.utils.Progbar(len(folder), unit_name="image")
        report = evaluate(
            model,
            dataset,
            folder.num_classes,
            folder.class_names,
            folder.ignore_label,
            progress=progress,
        )
        print()
        atomic_write_bytes(path, json.dumps(report, indent=2).encode())
        evaluation_chart(path.with_suffix(".png"), report)
    print(format_report(report))
    return report


def _predictions(config, model, data, out, count=6):
    from tfdeeplab.inference import prediction_rows
    from tfdeeplab.plots import prediction_grid

    path = out / "predictions.png"
    if path.exists():
        return path
    folder, dataset = _val_data(config, data, (config.image_size, config.image_size))
    rows = prediction_rows(model, dataset, folder, count)
    titles = ("image", "ground truth", "prediction")
    prediction_grid(path, rows, titles, folder.class_names, folder.colors)
    print(f"Wrote {path}")
    return path


def _exports(config, model, data, out):
    """SavedModel, TFLite fp32 and int8 (and QAT), each verified on the val split."""
    from converters import (
        QATOptions,
        calibration_dataset,
        export_saved_model,
        export_tflite,
        verify,
    )

    size = (config.image_size, config.image_size)
    folder = out / "export"

    def split(name, augment=False, batch_size=1):
        return calibration_dataset(
            data,
            size,
            split=name,
            batch_size=batch_size,
            augment=augment,
            seed=config.seed,
            val_fraction=config.val_fraction,
        )

    writers = {
        "saved_model": lambda path: export_saved_model(model, path),
        "model_fp32.tflite": lambda path: export_tflite(model, path, input_size=size),
        "model_int8.tflite": lambda path: export_tflite(
            model,
            path,
            "int8",
            size,
            split("train"),
            config.calibration_steps,
        ),
    }
    if config.qat:
        options = QATOptions(epochs=config.qat_epochs, verbose=1 if config.verbose else 0)
        writers["model_qat.tflite"] = lambda path: export_tflite(
            model,
            path,
            "qat",
            size,
            split("train", augment=True, batch_size=config.batch_size),
            config.calibration_steps,
            qat=options,
        )
    reports = {}
    for name, write in writers.items():
        path = folder / name
        report_path = folder / f"{name}.verification.json"
        if not (path.exists() and report_path.exists()):
            start = time.perf_counter()
            write(path)
            seconds = time.perf_counter() - start
            report = verify(path, model, split("val"), max_images=config.verify_images)
            report.write_json(report_path)
            print(report.to_markdown())
            print(f"Exported {path} in {seconds:.0f} s")
        reports[name] = json.loads(report_path.read_text())
    return reports


def _benchmark(config, artifacts, out):
    from benchmarks import latency

    path = out / "latency.json"
    if path.exists():
        return json.loads(path.read_text())
    timing = {"warmup_runs": 1, "min_runs": config.benchmark_runs, "min_secs": 1.0}
    size = (config.image_size, config.image_size)
    report = latency.benchmark(artifacts, size, 1, config.threads, {**timing, "max_secs": 60.0})
    latency.write_chart(report, out / "latency.png")
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    return report


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def _report(config, out, data, summary, evaluation, exports, latency_report, stages, command):
    from benchmarks.latency import markdown_table
    from benchmarks.stats import machine

    classes = "\n".join(
        f"| {row['name']} | {_percent(row['iou'])} | {_percent(row['precision'])} | "
        f"{_percent(row['recall'])} | {_percent(row['boundary_f1'])} | {row['pixels']} |"
        for row in evaluation["classes"]
    )
    exported = "\n".join(
        f"| {name} | {report['size_bytes'] / 2**20:.2f} | {_percent(report['agreement'])} | "
        f"{_percent(report['miou_keras'])} | {_percent(report['miou_artifact'])} | "
        f"{report['miou_drop_points']:.2f} | {report['max_logit_error']:.3g} |"
        for name, report in exports.items()
    )
    minutes = sum(stages.values()) / 60
    timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items())
    model = f"DeepLabV3 {config.backbone} (alpha {config.alpha}) OS{config.output_stride}" + (
        " + PointRend" if config.pointrend else ""
    )
    facts = "\n".join(
        [
            f"- Machine: {machine()['cpu']}, {machine()['cores']} cores, Python "
            f"{platform.python_version()}; this run's stages took {minutes:.1f} min ({timings}).",
            f"- Data: `{data}`, {summary['train_images']} training / {summary['val_images']} "
            f"validation images, {summary['num_classes']} classes, trained and evaluated at "
            f"{config.image_size}².",
            f"- Model: {model}, {summary['num_classes']} classes, ASPP rates "
            f"{tuple(summary.get('aspp_rates', ()))} (scaled to the crop).",
        ]
    )
    budget = " (stopped by the time budget)" if summary["stopped_by_time_budget"] else ""
    training = (
        f"{summary['epochs_run_this_time']} epochs of {summary['steps_per_epoch']} steps in this "
        f"session{' (resumed)' if summary['resumed'] else ''}, "
        f"{summary['wall_seconds'] / 60:.1f} min at {summary['train_images_per_second']:.1f} "
        f"images/s; best validation mIoU {_percent(summary['best_val_mean_iou'])}%{budget}."
    )
    scores = (
        f"mIoU **{_percent(evaluation['mean_iou'])}**, pixel accuracy "
        f"{_percent(evaluation['pixel_accuracy'])}, mean boundary F1 "
        f"{_percent(evaluation['mean_boundary_f1'])} (percent; boundary tolerance "
        f"{evaluation['boundary_tolerance_px']} px). mIoU: "
        f"{evaluation.get('mean_iou_definition', 'mean over classes')}."
    )
    text = f"""# tfdeeplab demo report

- Command: `{command}`
{facts}

## Training

{training}

![training curve](train/training_curve.png)

## Evaluation of train/best.keras (validation split, {evaluation["images"]} images)

{scores}

| class | IoU | precision | recall | boundary F1 | pixels |
| --- | --- | --- | --- | --- | --- |
{classes}

![IoU per class](evaluation.png)

![predictions](predictions.png)

## Exports, each verified against Keras on the validation split

| artifact | MiB | agreement % | mIoU Keras | mIoU artifact | drop (points) | max logit error |
| --- | --- | --- | --- | --- | --- | --- |
{exported}

Verification reports: `export/<artifact>.verification.json`.

## Latency (benchmarks.latency, batch 1, {latency_report["settings"]["threads"]} threads)

float32 matmul peak of this machine: {latency_report["matmul_peak_gflops"]:.1f} GFLOP/s.

{markdown_table(latency_report)}

![latency](latency.png)
"""
    return atomic_write_bytes(out / "REPORT.md", text.encode())


def _command(config):
    """The `tfdeeplab demo` command line that gives `config` (its non-default options)."""
    words = ["tfdeeplab", "demo"]
    for field in dataclasses.fields(DemoConfig):
        value = getattr(config, field.name)
        if value == field.default or field.name in ("overwrite", "verbose"):
            continue
        option = "--" + field.name.replace("_", "-")
        if field.name == "pointrend":
            words.append("--no-pointrend")
        elif isinstance(value, bool):
            words.append(option)
        else:
            words += [option, str(value)]
    return shlex.join(words)


def run_demo(config, command=None):
    """Runs every stage (skipping finished ones); returns the path of REPORT.md."""
    out = _prepare(config)
    atomic_write_bytes(
        out / "demo_config.json", json.dumps(dataclasses.asdict(config), indent=2).encode()
    )
    stages = _Stages()
    data = stages.run("data", _data, config, out)
    summary = stages.run("training (model.fit)", _train, config, data, out)
    model = keras.saving.load_model(summary["best_model"])
    evaluation = stages.run("evaluation", _evaluate, config, model, data, out)
    stages.run("predictions", _predictions, config, model, data, out)
    exports = stages.run("exports", _exports, config, model, data, out)
    artifacts = [Path(summary["best_model"]), *(out / "export" / name for name in exports)]
    latency_report = stages.run("latency", _benchmark, config, artifacts, out)
    command = command or _command(config)
    path = _report(
        config, out, data, summary, evaluation, exports, latency_report, stages.seconds, command
    )
    print(f"\nmIoU {_percent(evaluation['mean_iou'])}%; the report is {path}")
    return path
