"""`tfdeeplab demo` end to end with tiny settings: every artifact, numbers that match, reruns."""

import json
import re

import pytest

from tfdeeplab.cli import main

TINY = [
    "--num-images", "16", "--num-classes", "3", "--image-size", "64", "--alpha", "0.35",
    "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--val-fraction", "0.25",
    "--calibration-steps", "2", "--benchmark-runs", "3", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out


def _percent(value):
    return f"{100 * value:.2f}"


@pytest.mark.slow
def test_demo_writes_every_artifact(demo):
    for name in (
        "data/classes.json",
        "train/final.keras",
        "train/best.keras",
        "train/training_curve.png",
        "evaluation.json",
        "evaluation.png",
        "predictions.png",
        "export/saved_model/saved_model.pb",
        "export/model_fp32.tflite",
        "export/model_int8.tflite",
        "latency.json",
        "latency.png",
        "REPORT.md",
    ):
        assert (demo / name).exists(), name
    for name in ("saved_model", "model_fp32.tflite", "model_int8.tflite"):
        report = json.loads((demo / "export" / f"{name}.verification.json").read_text())
        assert report["images"] == 4 and report["miou_keras"] is not None
    assert not list(demo.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_report_numbers_are_those_of_the_json_files(demo):
    report = (demo / "REPORT.md").read_text()
    evaluation = json.loads((demo / "evaluation.json").read_text())
    assert f"mIoU **{_percent(evaluation['mean_iou'])}**" in report
    for row in evaluation["classes"]:
        assert f"| {row['name']} | {_percent(row['iou'])} |" in report
    for name in ("saved_model", "model_fp32.tflite", "model_int8.tflite"):
        verification = json.loads((demo / "export" / f"{name}.verification.json").read_text())
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2] == _percent(verification["agreement"])
        assert cells[3:5] == [
            _percent(verification["miou_keras"]),
            _percent(verification["miou_artifact"]),
        ]
    latency = json.loads((demo / "latency.json").read_text())
    assert [row["label"] for row in latency["results"]] == [
        "train/final.keras",
        "export/saved_model",
        "export/model_fp32.tflite",
        "export/model_int8.tflite",
    ]
    for row in latency["results"]:
        line = next(line for line in report.splitlines() if line.startswith(f"| {row['label']} |"))
        assert f"| {row['runs']['p50_ms']:.1f} |" in line and row["runs"]["count"] >= 3
    summary = json.loads((demo / "train" / "summary.json").read_text())
    final, best = (_percent(summary[f"{k}_val_mean_iou"]) for k in ("final", "best"))
    assert re.search(rf"validation mIoU\s+{final}% at the end \(final\.keras", report)
    assert f"{best}% at the best epoch (best.keras)" in report
    assert "## Evaluation of train/final.keras" in report


@pytest.mark.slow
def test_a_finished_demo_is_not_overwritten_and_stages_resume(demo, capsys):
    before = (demo / "REPORT.md").read_text()
    assert main(["demo", "--out", str(demo), *TINY]) == 2
    assert "holds a finished demo" in capsys.readouterr().err
    assert (demo / "REPORT.md").read_text() == before

    # A demo stopped after its exports: running it again redoes only what is missing.
    (demo / "REPORT.md").unlink()
    (demo / "latency.json").unlink()
    model_time = (demo / "train" / "final.keras").stat().st_mtime_ns
    assert main(["demo", "--out", str(demo), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "training already finished" in printed and "the report is" in printed
    assert (demo / "train" / "final.keras").stat().st_mtime_ns == model_time
    assert (demo / "REPORT.md").exists() and (demo / "latency.json").exists()
