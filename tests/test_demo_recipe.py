"""benchmarks.demo_recipe: the runs it plans, its report, and a tiny run of the demo's stages."""

import json

import pytest

from benchmarks import demo_recipe


def test_runs_are_the_seeds_at_the_demos_crop_then_the_other_crops():
    args = demo_recipe.build_parser().parse_args(["--seeds", "4", "5", "--sizes", "256"])
    assert demo_recipe.runs(args) == {
        "seed4_193": (4, 193),
        "seed5_193": (5, 193),
        "seed0_256": (0, 256),
    }
    with pytest.raises(SystemExit, match="nothing to run"):
        demo_recipe.main(["--seeds", "--sizes"])


def _evaluation(ious):
    classes = [{"name": name, "iou": iou} for name, iou in zip("ab", ious, strict=True)]
    return {"mean_iou": sum(ious) / 2, "mean_boundary_f1": 0.5, "pixel_accuracy": 0.9,
            "classes": classes}  # fmt: skip


def test_report_rows_are_the_runs_numbers(tmp_path):
    training = {"steps_run": 120, "wall_seconds": 600.0}
    report = {
        "machine": {"cpu": "cpu", "cpu_flags": ["avx2"], "cores": 2},
        "command": "python -m benchmarks.demo_recipe",
        "wall_s": 1500.0,
        "runs": {
            "seed1_193": {"seed": 1, "image_size": 193, "training": training,
                          "evaluation": _evaluation([0.8, 0.4])},
            "seed0_256": {"seed": 0, "image_size": 256, "training": training,
                          "evaluation": _evaluation([0.9, 0.7])},
        },
    }  # fmt: skip
    text = demo_recipe.markdown(report)
    assert "| seed1_193 | 1 | 193² | 60.0 | 50.0 | 90.0 | 40.0 | 120 | 10.0 |" in text
    assert "| b | 40.0 | 70.0 |" in text
    assert demo_recipe.picture(report, tmp_path / "r.png").exists()


@pytest.mark.slow
def test_a_tiny_run_trains_and_scores_final_keras(tmp_path):
    out = tmp_path / "DEMO_RECIPE.md"
    argv = [
        "--seeds", "1", "--sizes", "--num-images", "12", "--alpha", "0.35", "--batch-size",
        "4", "--epochs", "1", "--steps-per-epoch", "2", "--work", str(tmp_path / "work"),
        "--out", str(out),
    ]  # fmt: skip
    demo_recipe.main(argv)
    report = json.loads(out.with_suffix(".json").read_text())
    run = report["runs"]["seed1_193"]
    assert run["training"]["steps_run"] == 2 and run["image_size"] == 193
    saved = json.loads((tmp_path / "work" / "seed1_193" / "evaluation.json").read_text())
    assert run["evaluation"] == saved
    assert (tmp_path / "work" / "seed1_193" / "predictions.png").exists()
    assert out.with_suffix(".png").exists()
