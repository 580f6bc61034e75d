"""The main job end to end: data → `model.fit` → evaluation → verified exports → latency → report.

`tfdeeplab demo` runs it with defaults sized for about 15 minutes on 2 CPU cores, 10 of them
training; its options point the same pipeline at a user's folder, backbone, size and budget.
The output folder holds:

    data/                generated synthetic_scenes (unless --data)
    train/               the training run (final.keras, best.keras, history.csv,
                         training_curve.png, backup/)
    evaluation.json      per-class IoU, precision, recall, boundary F1 of final.keras (val split)
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
import shutil
import time
from pathlib import Path

import keras

from tfdeeplab.atomic import atomic_write_bytes
from tfdeeplab.demo_report import percent, write_report
from tfdeeplab.training import RunExistsError, train


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
    size, seed = config.training.image_size, config.training.seed
    synthetic_scenes(root, config.num_images, size, config.num_classes, seed=seed)
    print(f"Generated {config.num_images} scenes of {size}² in {root}")
    return root


def _train(config, data, out):
    folder = out / "train"
    summary = folder / "summary.json"
    if summary.exists():
        print(f"{folder}: training already finished")
        return json.loads(summary.read_text())
    return train(dataclasses.replace(config.training, data=str(data), out=str(folder)))


def _crop(config):
    """(H, W) of the training crop, which evaluation, exports and latency also use."""
    return (config.training.image_size, config.training.image_size)


def _val_data(config, data, batch_size=4):
    from tfdeeplab.data import make_dataset, scan_split

    folder = scan_split(data, "val", config.training.val_fraction, config.training.seed)
    dataset = make_dataset(folder, _crop(config), batch_size, augment=False, shuffle=False)
    return folder, dataset


def _evaluate(config, model, data, out):
    from tfdeeplab.inference import evaluate
    from tfdeeplab.metrics import format_report
    from tfdeeplab.plots import evaluation_chart

    path = out / "evaluation.json"
    if path.exists():
        report = json.loads(path.read_text())
    else:
        folder, dataset = _val_data(config, data)
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
    folder, dataset = _val_data(config, data)
    rows = prediction_rows(model, dataset, folder, count)
    titles = ("image", "ground truth", "prediction")
    prediction_grid(path, rows, titles, folder.class_names, folder.colours)
    print(f"Wrote {path}")
    return path


def _exports(config, model, data, out):
    """SavedModel, TFLite fp32 and int8 (and QAT), each verified on the val split."""
    from converters import ExportData, verify
    from converters.metadata import describe_run

    training = config.training
    size = _crop(config)
    folder = out / "export"
    split = ExportData(str(data), size, training.seed, training.val_fraction).split

    metadata = describe_run(model, out / "train" / "final.keras", data)
    reports = {}
    for name, write in _export_writers(config, model, size, split, metadata).items():
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


def _export_writers(config, model, size, split, metadata):
    """{artifact name: function writing it to a path}, each embedding `metadata`."""
    from converters import QATOptions, export_saved_model, export_tflite

    writers = {
        "saved_model": lambda path: export_saved_model(model, path, metadata=metadata),
        "model_fp32.tflite": lambda path: export_tflite(
            model, path, input_size=size, metadata=metadata
        ),
        "model_int8.tflite": lambda path: export_tflite(
            model, path, "int8", size, split("train"), config.calibration_steps, metadata=metadata
        ),
    }
    if config.qat:
        options = QATOptions(epochs=config.qat_epochs, verbose=1 if config.verbose else 0)
        qat_data = split("train", augment=True, batch_size=config.training.batch_size)
        writers["model_qat.tflite"] = lambda path: export_tflite(
            model, path, "qat", size, qat_data, config.calibration_steps, qat=options,
            metadata=metadata,
        )  # fmt: skip
    return writers


def _benchmark(config, artifacts, out):
    from benchmarks import latency

    path = out / "latency.json"
    if path.exists():
        return json.loads(path.read_text())
    timing = {"warmup_runs": 1, "min_runs": config.benchmark_runs, "min_secs": 1.0}
    size = _crop(config)
    report = latency.benchmark(artifacts, size, 1, config.threads, {**timing, "max_secs": 60.0})
    latency.write_chart(report, out / "latency.png")
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    return report


def _trained_and_evaluated(config, out, stages):
    """The data, training, evaluation and predictions stages, timed by `stages`.

    Returns:
        (data folder, training summary, final.keras loaded, its evaluation report).
    """
    data = stages.run("data", _data, config, out)
    summary = stages.run("training (model.fit)", _train, config, data, out)
    # The model the schedule ends with: best.keras is picked on the validation images that the
    # evaluation scores, so its figures would be tuned on them.
    model = keras.saving.load_model(summary["final_model"])
    evaluation = stages.run("evaluation", _evaluate, config, model, data, out)
    stages.run("predictions", _predictions, config, model, data, out)
    return data, summary, model, evaluation


def run_recipe(config):
    """The demo's data, training, evaluation and predictions stages, without exports or
    latency (`benchmarks.demo_recipe` runs them on other seeds and crops). Finished stages are
    skipped, as in `run_demo`.

    Returns:
        (the training summary, the evaluation report of final.keras on the val split).
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _, summary, _, evaluation = _trained_and_evaluated(config, out, _Stages())
    return summary, evaluation


def run_demo(config, command=None):
    """Runs every stage (skipping finished ones); returns the path of REPORT.md, which quotes
    `command` (the command line that ran the demo)."""
    out = _prepare(config)
    atomic_write_bytes(
        out / "demo_config.json", json.dumps(dataclasses.asdict(config), indent=2).encode()
    )
    stages = _Stages()
    data, summary, model, evaluation = _trained_and_evaluated(config, out, stages)
    exports = stages.run("exports", _exports, config, model, data, out)
    artifacts = [Path(summary["final_model"]), *(out / "export" / name for name in exports)]
    latency_report = stages.run("latency", _benchmark, config, artifacts, out)
    command = command or "tfdeeplab.demo.run_demo(config) (settings in demo_config.json)"
    path = write_report(
        config, out, data, summary, evaluation, exports, latency_report, stages.seconds, command
    )
    print(f"\nmIoU {percent(evaluation['mean_iou'])}%; the report is {path}")
    return path
