"""The `tfdeeplab` command line: demo, train, lr-find, evaluate, predict, show, export, benchmark.

Options are generated from the dataclasses that declare them (`tfdeeplab.config`,
`tfdeeplab.commands`). TensorFlow starts only once the command is known, with the command's
options (see `tensorflow_environment`). User mistakes (bad arguments, bad data, an existing
finished run) print one line and exit 2.
"""

import argparse
import contextlib
import os
import shlex
import sys

EPILOG = "Run `tfdeeplab COMMAND --help` for the options of one command."


# Commands that train: TensorFlow's oneDNN kernels train MobileNetV2 OS16 + PointRend at 256²
# 6× faster on an AVX2 CPU (2 cores, batch 8: 27.3 s/step with TF's default Eigen kernels, 4.6 s
# with oneDNN, measured), while on the same CPU they slow Keras inference (ResNet-50 OS8 at 513:
# 2.30 s → 3.25 s). TensorFlow itself turns them on only on AVX-512 VNNI / AMX CPUs.
ONEDNN_BY_DEFAULT = ("train", "lr-find", "demo")


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
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")


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


COMMANDS = {
    "demo": (
        "the main job end to end: data, model.fit, evaluation, verified SavedModel / TFLite "
        "fp32 / int8 exports, latency table, REPORT.md (about 15 min on 2 cores)"
    ),
    "train": "train with model.fit on a folder dataset",
    "lr-find": "learning-rate range test: loss-vs-rate curve (PNG) and a suggested --lr",
    "evaluate": "per-class IoU table, mIoU, boundary F1 (JSON and a PNG chart)",
    "predict": "palette mask and overlay PNGs",
    "show": "grid of image / ground truth / prediction rows with a class legend",
    "export": "SavedModel or (quantized) TFLite, verified against the Keras model",
    "import-torchvision": "torchvision DeepLabV3 weights (.pth, .safetensors, .npz) → .keras",
}


def build_parser():
    from tfdeeplab import commands
    from tfdeeplab.config import (
        DEMO_TRAINING,
        DEMO_TRAINING_OPTIONS,
        DemoConfig,
        LrFindOptions,
        TrainConfig,
    )
    from tfdeeplab.options import add_arguments

    parser = argparse.ArgumentParser(
        prog="tfdeeplab", description="DeepLabV3 semantic segmentation.", epilog=EPILOG
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_training = {"names": DEMO_TRAINING_OPTIONS, "defaults": DEMO_TRAINING}
    options = {
        "demo": [(DemoConfig, {}), (TrainConfig, demo_training)],
        "train": [(TrainConfig, {})],
        "lr-find": [(TrainConfig, {}), (LrFindOptions, {})],
        "evaluate": [(commands.EvaluateOptions, {})],
        "predict": [(commands.PredictOptions, {})],
        "show": [(commands.ShowOptions, {})],
        "export": [(commands.ExportOptions, {})],
        "import-torchvision": [(commands.ImportTorchvisionOptions, {})],
    }
    for command, help_text in COMMANDS.items():
        subparser = subparsers.add_parser(command, help=help_text)
        for cls, keywords in options[command]:
            add_arguments(subparser, cls, **keywords)
        _runtime_options(subparser, command)
        handler = getattr(commands, f"{command.replace('-', '_')}_command")
        subparser.set_defaults(handler=handler)
    subparsers.add_parser(
        "benchmark",
        help="latency, memory and FLOPs of .keras / SavedModel / .tflite artifacts "
        "(python -m benchmarks.latency; see tfdeeplab benchmark --help)",
        add_help=False,
    )
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["benchmark"]:  # benchmarks.latency owns its arguments and its help
        set_tensorflow_environment("benchmark", verbose="--verbose" in argv)
        from benchmarks import latency

        latency.main([a for a in argv[1:] if a != "--verbose"], prog="tfdeeplab benchmark")
        return 0
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["tfdeeplab", *argv])
    start_tensorflow(args.command, args.onednn, args.verbose)
    if getattr(args, "split", None) == "all":
        args.split = None
    from tfdeeplab.training import RunExistsError

    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, RunExistsError) as error:
        message = str(error).splitlines()[0]
        print(f"tfdeeplab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfdeeplab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
