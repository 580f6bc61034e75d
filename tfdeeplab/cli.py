"""The `tfdeeplab` command line: demo, train, evaluate, predict, show, export.

User mistakes (bad arguments, bad data, an existing finished run) print one line and exit 2.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

EPILOG = "Run `tfdeeplab COMMAND --help` for the options of one command."


# Commands that train: TensorFlow's oneDNN kernels train MobileNetV2 OS16 + PointRend at 256²
# 6× faster on an AVX2 CPU (2 cores, batch 8: 27.3 s/step with TF's default Eigen kernels, 4.6 s
# with oneDNN, measured), while on the same CPU they slow Keras inference (ResNet-50 OS8 at 513:
# 2.30 s → 3.25 s). TensorFlow itself turns them on only on AVX-512 VNNI / AMX CPUs.
ONEDNN_BY_DEFAULT = ("train", "demo")


def _runtime_options(parser, command):
    """--onednn / --no-onednn and --verbose, which every TensorFlow command takes."""
    default = "on" if command in ONEDNN_BY_DEFAULT else "TensorFlow's default (off on AVX2)"
    parser.add_argument(
        "--onednn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"TensorFlow's oneDNN CPU kernels (default here: {default}; see README)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="keep TensorFlow's start-up log messages"
    )


def tensorflow_environment(command, onednn=None, verbose=False, environ=None):
    """The environment variables `command` needs TensorFlow to start with, as far as `environ`
    (default: os.environ) lacks them: TF_ENABLE_ONEDNN_OPTS (see ONEDNN_BY_DEFAULT; a value the
    user exported stays unless a flag overrides it) and, unless `verbose`,
    TF_CPP_MIN_LOG_LEVEL=3, which also hides ERROR lines such as the failed cuInit that
    TensorFlow prints on machines without a GPU before it carries on without one."""
    environ = os.environ if environ is None else environ
    wanted = {}
    if onednn is not None:
        wanted["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    elif command in ONEDNN_BY_DEFAULT and "TF_ENABLE_ONEDNN_OPTS" not in environ:
        wanted["TF_ENABLE_ONEDNN_OPTS"] = "1"
    if not verbose and "TF_CPP_MIN_LOG_LEVEL" not in environ:
        wanted["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return {name: value for name, value in wanted.items() if environ.get(name) != value}


def set_tensorflow_environment(command, onednn=None, verbose=False):
    """Exports `tensorflow_environment` unless TensorFlow has started already (e.g. in a test
    calling `main`): it reads these variables once, when it starts, and keeps its options."""
    if "tensorflow" not in sys.modules:
        os.environ.update(tensorflow_environment(command, onednn, verbose))


def start_tensorflow(command, onednn=None, verbose=False):
    """`set_tensorflow_environment`, then TensorFlow with tfdeeplab's classes registered.

    Unless `verbose`, the native standard error is closed while TensorFlow loads: absl prints
    the messages logged before its initialisation (the oneDNN banner, "Could not find cuda
    drivers") whatever TF_CPP_MIN_LOG_LEVEL says, unless the process started with it. A failed
    import still raises, with its message, once standard error is back.
    """
    set_tensorflow_environment(command, onednn, verbose)
    from tfdeeplab import register_serializables

    with contextlib.nullcontext() if verbose else _native_stderr_closed():
        register_serializables()


@contextlib.contextmanager
def _native_stderr_closed():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def demo(args):
    """The main job: data, model.fit, evaluation, verified exports, latency, REPORT.md."""
    from tfdeeplab.demo import DemoConfig, run_demo

    fields = {f.name for f in dataclasses.fields(DemoConfig)}
    config = DemoConfig(**{k: v for k, v in vars(args).items() if k in fields})
    run_demo(config)
    return 0


def _load_model(path):
    import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--model {path}: no such file")
    return keras.saving.load_model(path)


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


def train_command(args):
    from tfdeeplab.training import TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    summary = train(config)
    print(json.dumps(summary, indent=2))
    print(f"Run folder: {Path(config.out).resolve()}")
    return 0


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
        folder, size, args.batch_size, augment=False, shuffle=False, eval_view=args.eval_view
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


def _read_rgb(path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: unreadable image ({error})") from None


def _class_colours(args, num_classes):
    from tfdeeplab.visualize import palette

    if getattr(args, "data", None):
        from tfdeeplab.data.folder import read_classes

        _, colours = read_classes(Path(args.data))
        if colours is not None and len(colours) == num_classes:
            return colours
    return palette(num_classes)


def predict_command(args):
    import keras

    from tfdeeplab.atomic import atomic_write_bytes
    from tfdeeplab.data.folder import IMAGE_SUFFIXES
    from tfdeeplab.inference import predict_probabilities
    from tfdeeplab.visualize import png_bytes

    model = _load_model(args.model)
    source = Path(args.input)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        paths = [source]
    else:
        raise FileNotFoundError(f"--input {source}: no such file or folder")
    if not paths:
        raise ValueError(f"--input {source}: no images ({', '.join(IMAGE_SUFFIXES)})")
    colours = _class_colours(args, model.output_shape[-1])
    out = Path(args.out)
    progress = keras.utils.Progbar(len(paths), unit_name="image")
    for path in paths:
        image = _read_rgb(path)
        mask = predict_probabilities(model, image[None], args.scales, args.flip)[0].argmax(-1)
        overlay = (0.5 * image + 0.5 * colours[mask]).astype(np.uint8)
        atomic_write_bytes(out / f"{path.stem}_mask.png", png_bytes(mask, colours))
        atomic_write_bytes(out / f"{path.stem}_overlay.png", png_bytes(overlay))
        progress.add(1)
    print(f"Wrote {2 * len(paths)} PNGs (palette masks and overlays) to {out}")
    return 0


def show_command(args):
    from tfdeeplab.inference import prediction_rows
    from tfdeeplab.plots import prediction_grid

    model = _load_model(args.model)
    num_classes = model.output_shape[-1]
    folder, dataset = _eval_dataset(args, num_classes)
    rows = prediction_rows(model, dataset, folder, args.count, args.scales, args.flip)
    titles = ("image", "ground truth", "prediction")
    path = prediction_grid(args.out, rows, titles, folder.class_names, folder.colors)
    print(f"Wrote {path} ({len(rows)} rows: image / ground truth / prediction)")
    return 0


def _export_artifact(args, model, size, write):
    """Writes the artifact to a temporary path, verifies it, then renames it to `args.out`.

    The verification report is written beside the artifact either way; an artifact below
    `--min-agreement` is removed (the report says why).
    """
    from converters import calibration_dataset, verify
    from tfdeeplab.atomic import atomic_directory, atomic_output

    out = Path(args.out)
    data = calibration_dataset(
        args.calibration_data,
        size,
        split="val",
        batch_size=1,
        shuffle=False,
        seed=args.seed,
        val_fraction=args.val_fraction,
        ignore_label=args.ignore_label,
    )
    folder = args.format == "saved_model"
    with atomic_directory(out) if folder else atomic_output(out, suffix=".tflite") as temporary:
        write(temporary)
        report = verify(temporary, model, data, args.ignore_label, max_images=args.verify_images)
        report.artifact = str(out)
        report_path = report.write_json(out.with_name(out.name + ".verification.json"))
        print(report.to_markdown())
        print(f"Wrote {report_path}")
        report.require(args.min_agreement)
    return report


def export_command(args):
    from converters import (
        QATOptions,
        Quantization,
        calibration_dataset,
        export_saved_model,
        export_tflite,
    )
    from tfdeeplab.atomic import refuse_overwrite

    quantization = Quantization.parse(args.quantization, "--quantization")
    if args.format == "saved_model" and quantization is not Quantization.NONE:
        raise ValueError(
            f"--quantization {quantization.value} applies to --format tflite; a SavedModel "
            "keeps the float model"
        )
    refuse_overwrite(args.out, args.overwrite, "--overwrite")
    model = _load_model(args.model)
    size = (args.input_size, args.input_size)

    def data(split, augment=False, batch_size=1):
        return calibration_dataset(
            args.calibration_data,
            size,
            split=split,
            batch_size=batch_size,
            augment=augment,
            seed=args.seed,
            val_fraction=args.val_fraction,
            ignore_label=args.ignore_label,
        )

    if args.format == "saved_model":

        def write(path):
            export_saved_model(model, path, overwrite=True)
    else:
        qat = quantization is Quantization.QAT
        representative = data("train", augment=qat, batch_size=args.qat_batch_size if qat else 1)
        options = QATOptions(args.qat_epochs, args.qat_steps, args.qat_lr, args.ignore_label)

        def write(path):
            export_tflite(
                model,
                path,
                quantization,
                size,
                representative,
                args.calibration_steps,
                args.output,
                args.io_type,
                qat=options,
                overwrite=True,
            )

    start = time.perf_counter()
    _export_artifact(args, model, size, write)
    print(f"Exported {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def _data_options(parser, image_size=513):
    parser.add_argument("--data", required=True, help="folder with images/ and masks/")
    parser.add_argument("--split", default="val", choices=("train", "val", "all"))
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--image-size",
        type=int,
        default=image_size,
        help="smallest canvas images are padded to (original view) or the resized size",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--ignore-label", type=int, default=255)
    parser.add_argument("--skip-bad", action="store_true", help="warn about bad pairs, skip them")
    parser.add_argument(
        "--eval-view",
        default="original",
        choices=("original", "resize"),
        help="score at the original resolution (padded, never resized; default) or on a copy "
        "resized to --image-size",
    )


def _inference_options(parser):
    parser.add_argument("--model", required=True, help="a .keras model")
    parser.add_argument("--scales", type=_scales, default=(1.0,), help="e.g. 0.75,1,1.25")
    parser.add_argument("--flip", action="store_true", help="also average mirrored inputs")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfdeeplab", description="DeepLabV3 semantic segmentation.", epilog=EPILOG
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "demo",
        help="the main job end to end: data, model.fit, evaluation, verified SavedModel / "
        "TFLite fp32 / int8 exports, latency table, REPORT.md (about 15 min on 2 cores)",
    )
    run.add_argument("--out", default="runs/demo", help="output folder (resumes if interrupted)")
    run.add_argument("--data", help="your folder dataset; default: generated synthetic scenes")
    run.add_argument("--num-images", type=int, default=300, help="generated scenes")
    run.add_argument("--num-classes", type=int, default=6, help="classes of generated scenes")
    run.add_argument("--backbone", default="mobilenetv2")
    run.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    run.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    run.add_argument(
        "--no-pointrend", dest="pointrend", action="store_false", help="plain DeepLabV3"
    )
    run.add_argument(
        "--image-size",
        type=int,
        default=193,
        help="scene and crop size; 16·k + 1 keeps feature cells on pixels",
    )
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--epochs", type=int, default=6)
    run.add_argument("--steps-per-epoch", type=int, default=None)
    run.add_argument("--lr", type=float, default=None)
    run.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    run.add_argument(
        "--train-minutes", type=float, default=10.0, help="training time budget (minutes)"
    )
    run.add_argument("--calibration-steps", type=int, default=50)
    run.add_argument("--verify-images", type=int, default=None, help="default: all val images")
    run.add_argument("--qat", action="store_true", help="also quantization-aware training")
    run.add_argument("--qat-epochs", type=int, default=1)
    run.add_argument("--benchmark-runs", type=int, default=20, help="timed runs per artifact")
    run.add_argument("--threads", type=int, default=None, help="benchmark threads")
    run.add_argument("--val-fraction", type=float, default=0.1)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--overwrite", action="store_true", help="replace a finished demo")
    _runtime_options(run, "demo")
    run.set_defaults(handler=demo)

    commands.add_parser(
        "benchmark",
        help="latency, memory and FLOPs of .keras / SavedModel / .tflite artifacts "
        "(python -m benchmarks.latency; see tfdeeplab benchmark --help)",
        add_help=False,
    )
    train = commands.add_parser("train", help="train with model.fit on a folder dataset")
    train.add_argument("--data", required=True, help="folder with images/ and masks/")
    train.add_argument("--out", required=True, help="run folder (resumes if interrupted)")
    train.add_argument("--backbone", default="mobilenetv2")
    train.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    train.add_argument("--alpha", type=float, default=1.0)
    train.add_argument("--backbone-weights", default=None, help="imagenet or a weights file")
    train.add_argument("--aspp-filters", type=int, default=256)
    train.add_argument("--pointrend", action="store_true", help="add a PointRend head")
    train.add_argument(
        "--pointrend-points", type=int, default=None, help="points per subdivision step"
    )
    train.add_argument(
        "--bn-momentum",
        type=float,
        default=0.9,
        help="BatchNorm momentum of every layer (0.9 = PyTorch's 0.1); keras.applications' "
        "0.999 lags far behind when training from scratch",
    )
    train.add_argument("--num-classes", type=int, default=None)
    train.add_argument("--ignore-label", type=int, default=255)
    train.add_argument("--image-size", type=int, default=513)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--steps-per-epoch", type=int, default=None)
    train.add_argument("--lr", type=float, default=None, help="default 0.01 (sgd), 1e-3 (adamw)")
    train.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--warmup-epochs", type=float, default=0.0)
    train.add_argument("--freeze-backbone-epochs", type=int, default=0)
    train.add_argument("--class-weights", action="store_true", help="median-frequency weights")
    train.add_argument("--focal-gamma", type=float, default=0.0)
    train.add_argument("--dice-weight", type=float, default=0.0)
    train.add_argument("--mixed-precision", action="store_true")
    train.add_argument(
        "--distribute", default="none", choices=("none", "mirrored", "multiworker", "tpu")
    )
    train.add_argument(
        "--no-sync-batchnorm",
        dest="sync_batchnorm",
        action="store_false",
        help="per-replica batch statistics when distributing (default: synchronized)",
    )
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--cache", action="store_true", help="cache decoded files in memory")
    train.add_argument("--skip-bad", action="store_true", help="warn about bad pairs, skip them")
    train.add_argument("--time-budget-minutes", type=float, default=None)
    train.add_argument("--overwrite", action="store_true", help="replace a finished run")
    _runtime_options(train, "train")
    train.set_defaults(handler=train_command)

    evaluate = commands.add_parser("evaluate", help="per-class IoU table, mIoU, boundary F1")
    _inference_options(evaluate)
    _data_options(evaluate)
    evaluate.add_argument("--boundary-tolerance", type=int, default=2, help="pixels")
    evaluate.add_argument("--json", default=None, help="default: <model>.evaluation.json")
    _runtime_options(evaluate, "evaluate")
    evaluate.set_defaults(handler=evaluate_command)

    predict = commands.add_parser("predict", help="palette mask and overlay PNGs")
    _inference_options(predict)
    predict.add_argument("--input", required=True, help="an image or a folder of images")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--data", default=None, help="dataset folder for classes.json colours")
    _runtime_options(predict, "predict")
    predict.set_defaults(handler=predict_command)

    show = commands.add_parser("show", help="grid of image / ground truth / prediction rows")
    _inference_options(show)
    _data_options(show)
    show.add_argument("--count", type=int, default=6, help="rows")
    show.add_argument("--out", required=True, help="output PNG")
    _runtime_options(show, "show")
    show.set_defaults(handler=show_command)

    export = commands.add_parser(
        "export", help="SavedModel or (quantized) TFLite, verified against the Keras model"
    )
    export.add_argument("--model", required=True, help="a .keras model")
    export.add_argument("--format", required=True, choices=("saved_model", "tflite"))
    export.add_argument(
        "--quantization",
        default="none",
        help="tflite: none, float16, dynamic, int8 or qat (default: none)",
    )
    export.add_argument("--input-size", type=int, default=513, help="tflite input H = W")
    export.add_argument(
        "--calibration-data",
        required=True,
        help="data folder: its train split calibrates int8 (and fine-tunes qat), its val "
        "split verifies the export",
    )
    export.add_argument("--out", required=True, help=".tflite file or SavedModel folder")
    export.add_argument("--output", default="logits", choices=("logits", "mask"))
    export.add_argument("--io-type", default="float32", choices=("float32", "uint8", "int8"))
    export.add_argument("--calibration-steps", type=int, default=100, help="images")
    export.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="fail (and keep no artifact) below this argmax agreement with Keras, e.g. 0.99",
    )
    export.add_argument("--verify-images", type=int, default=50)
    export.add_argument("--qat-epochs", type=int, default=2)
    export.add_argument("--qat-steps", type=int, default=None, help="batches per QAT epoch")
    export.add_argument("--qat-lr", type=float, default=1e-5)
    export.add_argument("--qat-batch-size", type=int, default=8)
    export.add_argument("--ignore-label", type=int, default=255)
    export.add_argument("--val-fraction", type=float, default=0.1, help="as in train")
    export.add_argument("--seed", type=int, default=0, help="as in train")
    export.add_argument("--overwrite", action="store_true", help="replace an existing artifact")
    _runtime_options(export, "export")
    export.set_defaults(handler=export_command)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["benchmark"]:  # benchmarks.latency owns its arguments and its help
        set_tensorflow_environment("benchmark", verbose="--verbose" in argv)
        from benchmarks import latency

        latency.main([a for a in argv[1:] if a != "--verbose"], prog="tfdeeplab benchmark")
        return 0
    args = build_parser().parse_args(argv)
    start_tensorflow(args.command, args.onednn, args.verbose)
    if getattr(args, "split", None) == "all":
        args.split = None
    from tfdeeplab.training import RunExistsError

    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, RunExistsError) as error:
        message = str(error).splitlines()[0]
        print(f"tfdeeplab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfdeeplab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
