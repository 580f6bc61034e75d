"""What importing tfdeeplab and starting the `tfdeeplab` command do to the process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfdeeplab.cli import tensorflow_environment

ROOT = Path(__file__).parents[1]


def run_python(code, *args, **environment):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_"))}
    result = subprocess.run(
        [sys.executable, *args] if args else [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, **environment},
        timeout=300,
    )
    return result


def test_import_sets_no_environment_variable_and_registers_the_classes():
    code = (
        "import os, keras, tfdeeplab\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        "print(sorted(k for k in os.environ if k.startswith(('TF_', 'KERAS_'))))\n"
        "print(keras.saving.get_registered_object('tfdeeplab>ASPP') is not None)\n"
        "print(tfdeeplab.DeepLabV3.__name__)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[]", "True", "DeepLabV3"]


@pytest.mark.parametrize(
    "command, onednn, verbose, environ, expected",
    [
        ("train", None, False, {}, {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}),
        ("demo", None, True, {}, {"TF_ENABLE_ONEDNN_OPTS": "1"}),
        ("evaluate", None, False, {}, {"TF_CPP_MIN_LOG_LEVEL": "3"}),
        ("evaluate", True, True, {}, {"TF_ENABLE_ONEDNN_OPTS": "1"}),
        ("train", False, True, {}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
        # What the user exported stays, unless a flag says otherwise.
        ("train", None, False, {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "0"}, {}),
        ("train", True, True, {"TF_ENABLE_ONEDNN_OPTS": "0"}, {"TF_ENABLE_ONEDNN_OPTS": "1"}),
    ],
)
def test_each_command_starts_tensorflow_with_its_options(
    command, onednn, verbose, environ, expected
):
    assert tensorflow_environment(command, onednn, verbose, environ) == expected


def test_the_command_line_says_one_line_without_tensorflow_start_up_noise():
    """The first thing a new user sees: no absl / CUDA / oneDNN banner before our message."""
    arguments = ["predict", "--model", "missing.keras", "--input", "x", "--out", "y"]
    result = run_python(None, "-m", "tfdeeplab.cli", *arguments)
    assert result.returncode == 2
    assert (
        result.stderr == "tfdeeplab predict: error: --model missing.keras: no such file or folder\n"
    )
    verbose = run_python(None, "-m", "tfdeeplab.cli", *arguments, "--verbose")
    assert verbose.returncode == 2 and verbose.stderr.endswith("no such file or folder\n")


def test_train_starts_tensorflow_with_onednn_and_no_onednn_without(tmp_path):
    """TensorFlow says so at start-up (shown with --verbose): train turns the kernels on, and
    --no-onednn keeps them off, on any CPU."""
    banner = "oneDNN custom operations are on"
    missing = str(tmp_path / "missing")
    train = ["train", "--data", missing, "--out", str(tmp_path / "run"), "--verbose"]
    result = run_python(None, "-m", "tfdeeplab.cli", *train)
    assert result.returncode == 2 and banner in result.stderr, result.stderr[-2000:]
    result = run_python(None, "-m", "tfdeeplab.cli", *train, "--no-onednn")
    assert result.returncode == 2 and banner not in result.stderr, result.stderr[-2000:]
