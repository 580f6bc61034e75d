"""benchmarks.quality: one scoring function for every model, its report, and a tiny run."""

import json

import numpy as np
import pytest

from benchmarks import quality


def test_score_is_tfdeeplabs_report_over_all_images():
    masks = [np.array([[0, 0, 1, 1], [0, 0, 1, 255]]), np.array([[1, 1], [1, 1]])]
    predictions = [np.array([[0, 1, 1, 1], [0, 0, 0, 1]]), np.array([[1, 1], [0, 1]])]
    scores = quality.score(predictions, masks, ["a", "b"])
    # Confusion over both images: a→a 3, a→b 1, b→a 2, b→b 5: IoU a 3/6, b 5/8.
    assert scores["classes"][0]["iou"] == pytest.approx(3 / 6)
    assert scores["classes"][1]["iou"] == pytest.approx(5 / 8)
    assert scores["pixel_accuracy"] == pytest.approx(8 / 11)
    assert scores["scored_by"] == "score"
    with pytest.raises(ValueError, match=r"shape \(2, 2\) for a \(2, 4\) mask"):
        quality.score([masks[1]], [masks[0]], ["a", "b"])


def _fake_report(tmp_path):
    from PIL import Image

    image, mask = tmp_path / "i.png", tmp_path / "m.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(mask)
    scores = quality.score([np.eye(8, dtype=np.uint8)], [np.eye(8, dtype=np.uint8)], ["a", "b"])
    model = {
        "label": "model",
        "training": {"train_images_per_second": 2.0, "steps": 3, "epochs": 1},
        "scores": scores,
        "_predictions": [np.eye(8, dtype=np.uint8)],
    }
    dataset = {
        "train_images": 1, "val_images": 1, "class_names": ["a", "b"],
        "colours": [[0, 0, 0], [255, 0, 0]], "val_paths": [str(image)],
        "val_mask_paths": [str(mask)], "image_size": 8, "batch_size": 1,
        "models": {"m1": model, "m2": {**model, "label": "other"}},
    }  # fmt: skip
    settings = vars(quality.build_parser().parse_args([]))
    return {
        "machine": {"cpu": "cpu", "cpu_flags": ["avx2"]},
        "settings": settings,
        "command": "python -m benchmarks.quality",
        "datasets": {"synthetic": dataset},
        "wall_s": 60.0,
    }


def test_report_tables_and_pictures(tmp_path):
    report = _fake_report(tmp_path)
    text = quality.markdown(report)
    assert "| model | 100.0 | 100.0 | 100.0 | 2.00 | 3 | 1 |" in text
    assert "| b | 100.0 | 100.0 |" in text
    written = quality.pictures(report, tmp_path)
    assert [p.name for p in written] == [
        "QUALITY_synthetic_iou.png",
        "QUALITY_synthetic_predictions.png",
    ]


def test_torchvision_models_need_torchvision(monkeypatch):
    monkeypatch.setattr(quality, "module_available", lambda module, python=None: False)
    with pytest.raises(SystemExit, match="need torchvision: pass --torch-python"):
        quality.main(["--models", "torchvision-mobilenet-v3"])


@pytest.mark.slow
def test_a_tiny_run_scores_every_model_with_the_same_function(tmp_path):
    out = tmp_path / "QUALITY.md"
    argv = [
        "--datasets", "synthetic", "--synthetic-images", "12", "--image-size", "33",
        "--alpha", "0.35", "--budget-minutes", "0.05", "--models", "tfdeeplab",
        "tfdeeplab-pointrend", "--grid-images", "2", "--out", str(out),
    ]  # fmt: skip
    quality.main(argv)
    report = json.loads(out.with_suffix(".json").read_text())
    models = report["datasets"]["synthetic"]["models"]
    assert set(models) == {"tfdeeplab", "tfdeeplab-pointrend"}
    for result in models.values():
        assert result["scores"]["scored_by"] == "score"
        assert {"mean_iou", "mean_boundary_f1", "pixel_accuracy", "classes"} <= set(
            result["scores"]
        )
        assert result["training"]["steps"] >= 1 and result["training"]["train_seconds"] > 0
    assert (tmp_path / "QUALITY_synthetic_predictions.png").exists()
    assert "## synthetic" in out.read_text()
