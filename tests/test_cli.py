import numpy as np
import pytest
from PIL import Image

from converters import LiteRTModel
from tfdeeplab.cli import main


def test_demo_runs_keras_and_litert_and_writes_its_files(tmp_path, capsys):
    args = ["demo", "--alpha", "0.35", "--image-size", "64", "--num-classes", "3"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "logits (1, 64, 64, 3) float32" in printed
    assert "argmax agreement 100.00%" in printed
    picture = np.asarray(Image.open(tmp_path / "prediction.png"))
    assert picture.shape == (64, 128, 3)
    litert = LiteRTModel(tmp_path / "model_fp32.tflite")
    assert litert(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 3)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--backbone", "resnet51"], "backbone='resnet51' is not supported"),
        (["demo", "--num-classes", "0"], "num_classes=0 must be an integer"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tfdeeplab demo: error:") and message in error
    assert "\n" not in error
