"""The `tfdeeplab` subcommands: their options, as dataclasses whose fields declare each option
once (see `tfdeeplab.options`; training's and the demo's live in `tfdeeplab.config`), and their
handlers. Handlers import Keras, TensorFlow and converters when they run, after the command
line has started TensorFlow with the command's options (see `tfdeeplab.cli`).
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

from tfdeeplab.config import DEMO_TRAINING_OPTIONS, DemoConfig, TrainConfig, demo_training
from tfdeeplab.options import int_list, setting, values

# The size of the images that calibrate and verify an export with `--input-size dynamic`.
DYNAMIC_DATA_SIZE = 513


def _scales(text):
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None
    if not scales or any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(f"scales {text!r} must be positive")
    return scales


@dataclasses.dataclass(kw_only=True)
class InferenceOptions:
    model: str = setting(help="a .keras model")
    scales: tuple = setting((1.0,), "input scales averaged, e.g. 0.75,1,1.25", parse=_scales)
    flip: bool = setting(False, "also average mirrored inputs")


@dataclasses.dataclass(kw_only=True)
class DataOptions:
    data: str = setting(help="folder with images/ and masks/")
    split: str = setting("val", "which pairs", choices=("train", "val", "all"))
    val_fraction: float = setting(0.1, "validation share without a val/ folder (as in train)")
    seed: int = setting(0, "split seed (as in train)")
    image_size: int = setting(
        513, "smallest canvas images are padded to (original view) or the resized size"
    )
    batch_size: int = setting(4, "images per batch")
    ignore_label: int = setting(255, "mask value that is not scored")
    ignore_classes: tuple = setting(
        (), "class values left out of the scores, e.g. 0,5", parse=int_list
    )
    skip_bad: bool = setting(False, "warn about bad pairs and skip them")
    eval_view: str = setting(
        "original",
        "score at the original resolution (padded, never resized) or on a copy resized to "
        "--image-size",
        choices=("original", "resize"),
    )


@dataclasses.dataclass(kw_only=True)
class EvaluateOptions(InferenceOptions, DataOptions):
    boundary_tolerance: int = setting(2, "boundary F1 tolerance in pixels")
    json: str | None = setting(None, "report file; default: <model>.evaluation.json")


@dataclasses.dataclass(kw_only=True)
class PredictOptions(InferenceOptions):
    model: str = setting(help="a .keras model, SavedModel folder or .tflite file (exported: "
                         "its own class colours)")  # fmt: skip
    input: str = setting(help="an image, a folder of images or a (Geo)TIFF raster")
    out: str = setting(help="output folder (PNGs), or a .tif for a GeoTIFF class raster")
    data: str | None = setting(None, "dataset folder for classes.json colours")
    tile: int | None = setting(None, "sliding windows of this size (a raster of any size)")
    overlap: int = setting(64, "pixels neighbouring windows share, blended (with --tile)")
    batch_size: int = setting(4, "windows per model call (with --tile)")
    probabilities: bool = setting(False, "also <out>_probabilities.tif (with a .tif --out)")
    require_georeference: bool = setting(False, "refuse a raster without a CRS (.tif --out)")


@dataclasses.dataclass(kw_only=True)
class ShowOptions(InferenceOptions, DataOptions):
    count: int = setting(6, "rows")
    out: str = setting(help="output PNG")


def _input_size(text):
    """--input-size: an int, or "dynamic"."""
    if text == "dynamic":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an integer nor dynamic") from None


@dataclasses.dataclass(kw_only=True)
class ExportOptions:
    model: str = setting(help="a .keras model")
    format: str = setting(help="artifact", choices=("saved_model", "tflite"))
    quantization: str = setting("none", "tflite: none, float16, dynamic, int8 or qat")
    input_size: int | str = setting(
        513,
        "tflite input H = W, or dynamic (H and W set at run time, for servers; calibrated and "
        "verified on images padded to 513)",
        parse=_input_size,
    )
    calibration_data: str = setting(
        help="data folder: its train split calibrates int8 (and fine-tunes qat), its val "
        "split verifies the export"
    )
    out: str = setting(help=".tflite file or SavedModel folder")
    output: str = setting("logits", "what the artifact returns", choices=("logits", "mask"))
    io_type: str = setting("float32", "input type", choices=("float32", "uint8", "int8"))
    calibration_steps: int = setting(100, "calibration images")
    min_agreement: float | None = setting(
        None, "fail (and keep no artifact) below this argmax agreement with Keras, e.g. 0.99"
    )
    verify_images: int = setting(50, "verification images")
    qat_epochs: int = setting(2, "QAT fine-tuning epochs")
    qat_steps: int | None = setting(None, "batches per QAT epoch")
    qat_lr: float = setting(1e-6, "QAT learning rate")
    qat_batch_size: int = setting(8, "QAT batch size")
    ignore_label: int = setting(255, "mask value that is not scored")
    val_fraction: float = setting(0.1, "as in train")
    seed: int = setting(0, "as in train")
    overwrite: bool = setting(False, "replace an existing artifact")


@dataclasses.dataclass(kw_only=True)
class ImportTorchvisionOptions:
    arch: str = setting(
        help="torchvision builder",
        choices=("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large"),
    )
    weights: str = setting(
        help=".pth/.pt (needs torch), .safetensors or .npz state dict, or a torchvision "
        "weights name such as COCO_WITH_VOC_LABELS_V1 (needs torchvision and internet)"
    )
    out: str = setting(help="the .keras model to write")
    num_classes: int | None = setting(None, "default: the state dict's")
    aux: bool = setting(False, "keep the auxiliary FCN head (training only)")
    overwrite: bool = setting(False, "replace an existing file")


def demo_command(args):
    """The main job: data, model.fit, evaluation, verified exports, latency, REPORT.md."""
    from tfdeeplab.demo import run_demo

    training = demo_training(**values(TrainConfig, args, DEMO_TRAINING_OPTIONS))
    config = DemoConfig(**values(DemoConfig, args, exclude=("training",)), training=training)
    run_demo(config, args.command_line)
    return 0


def train_command(args):
    from tfdeeplab.training import train

    config = TrainConfig(**values(TrainConfig, args))
    summary = train(config)
    print(json.dumps(summary, indent=2))
    print(f"Run folder: {Path(config.out).resolve()}")
    return 0


def lr_find_command(args):
    from tfdeeplab.config import LrFindOptions
    from tfdeeplab.training import find_learning_rate

    config = TrainConfig(**values(TrainConfig, args))
    options = LrFindOptions(**values(LrFindOptions, args))
    find_learning_rate(config, options.sweep_steps, options.min_lr, options.max_lr)
    return 0


def import_torchvision_command(args):
    from tfdeeplab.atomic import refuse_overwrite
    from tfdeeplab.callbacks import save_model_atomically
    from tfdeeplab.torchvision_port import from_torchvision

    if not args.out.endswith(".keras"):
        raise ValueError(f"--out {args.out}: the model file must end in .keras")
    refuse_overwrite(args.out, args.overwrite, "--overwrite")
    model = from_torchvision(args.arch, args.weights, args.num_classes, args.aux)
    save_model_atomically(model, args.out)
    classes = model.output_shape[-1]
    print(f"Wrote {args.out}: torchvision {args.arch}, {classes} classes")
    return 0


def _load_model(path):
    import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--model {path}: no such file")
    return keras.saving.load_model(path)


def _eval_dataset(args, num_classes=None):
    from tfdeeplab.data import make_dataset, scan_split

    folder = scan_split(
        args.data,
        args.split,
        args.val_fraction,
        args.seed,
        num_classes=num_classes,
        ignore_label=args.ignore_label,
        skip_bad=args.skip_bad,
    )
    size = (args.image_size, args.image_size)
    dataset = make_dataset(
        folder,
        size,
        args.batch_size,
        augment=False,
        shuffle=False,
        eval_view=args.eval_view,
        ignore_classes=args.ignore_classes,
    )
    return folder, dataset


def evaluate_command(args):
    import keras

    from tfdeeplab.atomic import atomic_write_bytes
    from tfdeeplab.inference import evaluate
    from tfdeeplab.metrics import format_report
    from tfdeeplab.plots import evaluation_chart

    model = _load_model(args.model)
    num_classes = model.output_shape[-1]
    folder, dataset = _eval_dataset(args, num_classes)
    progress = keras.utils.Progbar(len(folder), unit_name="image")
    report = evaluate(
        model,
        dataset,
        num_classes,
        folder.class_names,
        folder.ignore_label,
        args.scales,
        args.flip,
        args.boundary_tolerance,
        progress,
        args.ignore_classes,
    )
    print()
    report["model"] = str(args.model)
    report["data"] = str(args.data)
    print(format_report(report))
    path = Path(args.json or Path(args.model).with_suffix(".evaluation.json"))
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    chart = evaluation_chart(path.with_suffix(".png"), report)
    print(f"Wrote {path} and {chart}")
    return 0


def predict_command(args):
    import keras

    from converters.predictors import class_colours, load_predictor, read_image
    from tfdeeplab.data.folder import image_paths
    from tfdeeplab.visualize import write_prediction_pngs

    if args.tile is not None or args.out.lower().endswith((".tif", ".tiff")):
        from tfdeeplab.raster_predict import predict_command_tiled

        return predict_command_tiled(args)
    predictor = load_predictor(args.model, args.scales, args.flip)
    paths = image_paths(args.input)
    colours = class_colours(args.data, predictor.num_classes, predictor.metadata)
    out = Path(args.out)
    progress = keras.utils.Progbar(len(paths), unit_name="image")
    for path in paths:
        image = read_image(path)
        mask = predictor(image)
        write_prediction_pngs(out, path.stem, image, mask, colours)
        progress.add(1)
    print(f"Wrote palette masks (and overlays of RGB images) of {len(paths)} images to {out}")
    return 0


def show_command(args):
    from tfdeeplab.inference import prediction_rows
    from tfdeeplab.plots import prediction_grid

    model = _load_model(args.model)
    num_classes = model.output_shape[-1]
    folder, dataset = _eval_dataset(args, num_classes)
    rows = prediction_rows(model, dataset, folder, args.count, args.scales, args.flip)
    titles = ("image", "ground truth", "prediction")
    path = prediction_grid(args.out, rows, titles, folder.class_names, folder.colours)
    print(f"Wrote {path} ({len(rows)} rows: image / ground truth / prediction)")
    return 0


def _export_artifact(args, model, data, write):
    """Writes the artifact to a temporary path, verifies it on `data`'s val split, then renames
    it to `args.out`.

    The verification report is written beside the artifact either way; an artifact below
    `--min-agreement` is removed (the report says why).
    """
    from converters import verify
    from tfdeeplab.atomic import atomic_directory, atomic_output

    out = Path(args.out)
    folder = args.format == "saved_model"
    with atomic_directory(out) if folder else atomic_output(out, suffix=".tflite") as temporary:
        write(temporary)
        report = verify(
            temporary,
            model,
            data.split("val", shuffle=False),
            args.ignore_label,
            max_images=args.verify_images,
        )
        report.artifact = str(out)
        report_path = report.write_json(out.with_name(out.name + ".verification.json"))
        print(report.to_markdown())
        print(f"Wrote {report_path}")
        report.require(args.min_agreement)
    return report


def export_command(args):
    from converters import ExportData, Quantization
    from tfdeeplab.atomic import refuse_overwrite

    quantization = Quantization.parse(args.quantization, "--quantization")
    if args.format == "saved_model" and quantization is not Quantization.NONE:
        raise ValueError(
            f"--quantization {quantization.value} applies to --format tflite; a SavedModel "
            "keeps the float model"
        )
    refuse_overwrite(args.out, args.overwrite, "--overwrite")
    model = _load_model(args.model)
    dynamic = args.input_size == "dynamic"
    size = (DYNAMIC_DATA_SIZE,) * 2 if dynamic else (args.input_size, args.input_size)
    data = ExportData(args.calibration_data, size, args.seed, args.val_fraction, args.ignore_label)
    write = _artifact_writer(args, model, quantization, data)
    start = time.perf_counter()
    _export_artifact(args, model, data, write)
    print(f"Exported {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def _artifact_writer(args, model, quantization, data):
    """A function writing the artifact `args` ask for to a path."""
    from converters import QATOptions, Quantization, export_saved_model, export_tflite
    from converters.metadata import describe_run

    metadata = describe_run(model, args.model, args.calibration_data, args.ignore_label)
    if args.format == "saved_model":
        return lambda path: export_saved_model(model, path, overwrite=True, metadata=metadata)
    qat = quantization is Quantization.QAT
    representative = data.split("train", augment=qat, batch_size=args.qat_batch_size if qat else 1)
    options = QATOptions(args.qat_epochs, args.qat_steps, args.qat_lr, args.ignore_label)
    return lambda path: export_tflite(
        model,
        path,
        quantization,
        "dynamic" if args.input_size == "dynamic" else data.input_size,
        representative,
        args.calibration_steps,
        args.output,
        args.io_type,
        qat=options,
        overwrite=True,
        metadata=metadata,
    )
