"""Measurements in a fresh interpreter, so no artifact's threads, caches or memory affect another.

    run_in_subprocess("benchmarks.artifacts:measure_job", job, "model.tflite")

runs `python -m benchmarks.worker benchmarks.artifacts:measure_job '<job JSON>'` (with this
project on the path, in this or another environment's interpreter) and returns the JSON the
target wrote. The target is named as "module:function", so this module imports none of the
benchmarks it runs and they import only it: the imports run one way.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it starts, and its oneDNN kernels change TF
timings both ways (see README, "oneDNN"); every subprocess gets the value explicitly, and the
measured rows record it.
"""

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def set_tf_threads(threads):
    """TensorFlow with `threads` intra- and inter-op threads (before it runs anything)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def onednn_environment(onednn):
    """The TF_ENABLE_ONEDNN_OPTS value for `onednn` (True/False)."""
    return {"TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}


def add_onednn_argument(parser, default=False):
    """--onednn / --no-onednn: TensorFlow's oneDNN kernels in the measuring processes."""
    parser.add_argument(
        "--onednn",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="TensorFlow's oneDNN CPU kernels where TensorFlow runs (default: %(default)s; "
        "TensorFlow's own default is on only with AVX-512 VNNI / AMX; on AVX2 they speed "
        "training 6x and slow inference, see README)",
    )


def start_tensorflow(onednn):
    """For benchmarks that measure in their own process: sets TF_ENABLE_ONEDNN_OPTS, which
    TensorFlow reads once at start-up, then imports TensorFlow. Returns whether its oneDNN
    kernels are on (in a process that had imported TensorFlow already, as they were)."""
    if "tensorflow" not in sys.modules:
        os.environ.update(onednn_environment(onednn))
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return onednn_enabled()


def onednn_enabled():
    """Whether this process' TensorFlow runs its oneDNN kernels."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def module_available(module, python=None):
    """Whether `python` (default: this interpreter) can import `module`."""
    check = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    completed = subprocess.run([python or sys.executable, "-c", check], capture_output=True)
    return completed.returncode == 0


def run_in_subprocess(target, job, description, python=None, onednn=False):
    """Calls `target(job)` ("module:function", JSON in and out) in a fresh interpreter.

    Args:
        target: "module:function"; the function takes the job dict and returns a JSON-able dict.
        job: the function's argument.
        description: names the measurement in the error if the subprocess fails.
        python: another environment's interpreter (e.g. one with torch); this project is put
            on its path.
        onednn: TensorFlow's oneDNN kernels on or off in that process.

    Raises:
        RuntimeError: naming `description`, with the end of the subprocess' stderr.
    """
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "result.json"
        environment = {
            **os.environ,
            **onednn_environment(onednn),
            "PYTHONPATH": path,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "BENCHMARK_OUTPUT": str(output),
        }
        command = [python or sys.executable, "-m", "benchmarks.worker", target, json.dumps(job)]
        completed = subprocess.run(command, env=environment, capture_output=True, text=True)
        if completed.returncode != 0 or not output.exists():
            tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"benchmarking {description} failed:\n{tail}")
        return json.loads(output.read_text())


def main(argv=None):
    target, job = sys.argv[1:] if argv is None else argv
    module, _, function = target.partition(":")
    result = getattr(importlib.import_module(module), function)(json.loads(job))
    Path(os.environ["BENCHMARK_OUTPUT"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
