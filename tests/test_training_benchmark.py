"""benchmarks.training: its rows, report and RESULTS.md section, on a tiny model. No timings."""

import argparse
import json
import sys

import pytest
from PIL import Image

from benchmarks import training
from benchmarks.torch_training import torch_model
from tfdeeplab.data import synthetic_scenes

RESULTS = """# Benchmark results

## Every artifact

artifact rows

## Training

an older training table

## Targets

- a target
"""


def test_training_section_is_replaced_in_place_and_kept_otherwise():
    new = "## Training\n\nnew table\n"
    replaced = training.replace_section(RESULTS, new)
    assert "an older training table" not in replaced
    assert replaced.index("artifact rows") < replaced.index("new table")
    assert replaced.index("new table") < replaced.index("- a target")
    assert training.section_of(replaced) == new
    assert training.section_of("# Benchmark results\n") is None
    appended = training.replace_section("# Benchmark results\n\nrows\n", new)
    assert appended == "# Benchmark results\n\nrows\n\n" + new
    assert training.replace_section("", new) == new


def test_model_names_are_checked():
    assert training.parse_model("resnet50:8") == ("resnet50", 8)
    with pytest.raises(argparse.ArgumentTypeError, match="resnet50"):
        training.parse_model("resnet50")
    with pytest.raises(ValueError, match="'xception' at output stride 16"):
        torch_model("xception", 16, 21)


@pytest.mark.slow
def test_every_row_is_measured_and_written(tmp_path):
    data = synthetic_scenes(tmp_path / "scenes", 8, 33, 3, seed=0)
    results = tmp_path / "RESULTS.md"
    results.write_text(RESULTS)
    rows = ["step", "fit, tf.data pipeline", "fit as train runs it", "tf.data pipeline alone"]
    argv = ["--models", "mobilenetv2:16", "--alpha", "0.35", "--image-size", "33"]
    argv += ["--steps", "2", "--warmup-steps", "1", "--pipeline-batches", "2", "--threads", "1"]
    argv += ["--data", str(data), "--rows", *rows, "--json", str(tmp_path / "training.json")]
    argv += ["--results", str(results), "--torch-python", sys.executable]
    report = training.main(argv)

    saved = json.loads((tmp_path / "training.json").read_text())
    assert saved["models"] == report["models"]
    (model,) = saved["models"]
    measured = {row["row"]: row for row in model["rows"]}
    assert list(measured) == rows  # torchvision is not in this environment: skipped
    for row in measured.values():
        assert row["steps"]["count"] == 2
        assert row["images_per_second"] > 0
        assert row["vs_torchvision"] is None
    assert measured["step"]["forward_macs_per_image"] > 0
    text = results.read_text()
    assert "an older training table" not in text and "- a target" in text
    for name in rows:
        assert f"| mobilenetv2 OS16 | {name} |" in text
    with Image.open(tmp_path / "RESULTS_training.png") as picture:
        assert picture.format == "PNG" and picture.width > 100
