"""benchmarks.camvid_recipe: a tiny run of its commands on split folders, and its report."""

import json

import pytest

from benchmarks import camvid_recipe


def test_data_without_a_val_split_is_named(tmp_path):
    with pytest.raises(SystemExit, match=f"--data {tmp_path}: no val/ split"):
        camvid_recipe.main(["--data", str(tmp_path), "--out", str(tmp_path / "R.md")])


@pytest.mark.slow
def test_a_tiny_run_reports_what_its_commands_wrote_and_is_reused(tmp_path, monkeypatch):
    from tfdeeplab.data import synthetic_scenes

    data = tmp_path / "data"
    synthetic_scenes(data / "train", 8, 48, 4, seed=0)
    synthetic_scenes(data / "val", 3, 48, 4, seed=1)
    tiny = ["--backbone", "mobilenetv2", "--alpha", "0.35", "--image-size", "48",
            "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "2"]  # fmt: skip
    monkeypatch.setattr(camvid_recipe, "RECIPE", tiny)
    out, work = tmp_path / "bench" / "CAMVID_RECIPE.md", tmp_path / "run"
    argv = ["--data", str(data), "--minutes", "5", "--work", str(work), "--out", str(out)]
    report = camvid_recipe.main(argv)
    assert report["training"]["steps"] == 2
    assert report["evaluation"] == json.loads((work / "evaluation.json").read_text())
    assert report["evaluation"]["images"] == 3
    text = out.read_text()
    assert f"**mIoU {100 * report['evaluation']['mean_iou']:.1f}**" in text
    assert "| SegNet | 55.6 |" in text and "--time-budget-minutes 5" in text
    for suffix in ("_iou.png", "_predictions.png", "_curve.png"):
        assert out.with_name("CAMVID_RECIPE" + suffix).stat().st_size > 0

    # A finished run is reused: nothing is trained or scored again.
    def stamps():
        return [(work / name).stat().st_mtime_ns for name in ("summary.json", "evaluation.json")]

    before = stamps()
    camvid_recipe.main(argv)
    assert stamps() == before
