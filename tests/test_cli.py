import pytest
from PIL import Image

from converters import LiteRTModel
from tfdeeplab.cli import main


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


def test_train_evaluate_predict_show_chain(tmp_path, capsys):
    import json

    from tfdeeplab.data import synthetic_scenes

    data = synthetic_scenes(tmp_path / "data", 10, 40, 4, seed=2)
    run = tmp_path / "run"
    tiny = ["--alpha", "0.35", "--aspp-filters", "16", "--image-size", "40", "--batch-size", "4"]
    assert main(["train", "--data", str(data), "--out", str(run), "--epochs", "2",
                 "--steps-per-epoch", "2", "--optimizer", "adamw", "--val-fraction", "0.2",
                 *tiny]) == 0  # fmt: skip
    assert (run / "best.keras").is_file()
    model = str(run / "best.keras")
    report_path = tmp_path / "eval.json"
    assert main(["evaluate", "--model", model, "--data", str(data), "--image-size", "40",
                 "--scales", "0.75,1,1.25", "--flip", "--json", str(report_path),
                 "--val-fraction", "0.2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["images"] == 2 and report["scales"] == [0.75, 1.0, 1.25] and report["flip"]
    assert [row["name"] for row in report["classes"]] == ["background", "disc", "box", "line"]
    assert "mIoU" in printed and "background" in printed
    assert main(["predict", "--model", model, "--input", str(data / "images"),
                 "--out", str(tmp_path / "pred"), "--data", str(data)]) == 0  # fmt: skip
    mask = Image.open(tmp_path / "pred" / "scene_00000_mask.png")
    assert mask.mode == "P" and mask.size == (40, 40)
    assert (tmp_path / "pred" / "scene_00009_overlay.png").is_file()
    grid = tmp_path / "grid.png"
    assert main(["show", "--model", model, "--data", str(data), "--image-size", "40",
                 "--split", "all", "--count", "3", "--out", str(grid)]) == 0  # fmt: skip
    assert Image.open(grid).format == "PNG"
    assert "(3 rows: image / ground truth / prediction)" in capsys.readouterr().out
    assert main(["train", "--data", str(data), "--out", str(run), *tiny]) == 2
    assert "holds a finished run" in capsys.readouterr().err


@pytest.mark.slow
def test_export_writes_verified_artifacts_and_keeps_none_below_min_agreement(tmp_path, capsys):
    import json

    from tests.helpers import trained_tiny_model
    from tfdeeplab.data import synthetic_scenes

    data = str(synthetic_scenes(tmp_path / "data", 6, 48, 3, seed=3))
    model_path = tmp_path / "model.keras"
    trained_tiny_model(48, epochs=2, backbone="mobilenetv2", alpha=0.35, aspp_filters=16).save(
        model_path
    )
    common = ["export", "--model", str(model_path), "--calibration-data", data,
              "--input-size", "48", "--val-fraction", "0.5"]  # fmt: skip
    out = tmp_path / "exports" / "model_dynamic.tflite"
    assert (
        main([*common, "--format", "tflite", "--quantization", "dynamic", "--out", str(out)]) == 0
    )
    report = json.loads(out.with_name(out.name + ".verification.json").read_text())
    assert report["images"] == 3 and report["artifact"] == str(out) and report["agreement"] > 0.9
    assert "| argmax agreement with Keras |" in capsys.readouterr().out
    assert LiteRTModel(out).input_shape == (1, 48, 48, 3)

    assert main([*common, "--format", "tflite", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err

    strict = tmp_path / "exports" / "strict.tflite"
    assert main([*common, "--format", "tflite", "--quantization", "int8", "--calibration-steps",
                 "3", "--min-agreement", "1.01", "--out", str(strict)]) == 2  # fmt: skip
    assert "below min_agreement 101.00%" in capsys.readouterr().err
    assert not strict.exists() and strict.with_name("strict.tflite.verification.json").is_file()

    served = tmp_path / "exports" / "saved_model"
    assert main([*common, "--format", "saved_model", "--out", str(served)]) == 0
    assert (served / "saved_model.pb").is_file()
    assert main([*common, "--format", "saved_model", "--quantization", "int8",
                 "--out", str(tmp_path / "other")]) == 2  # fmt: skip
    assert "applies to --format tflite" in capsys.readouterr().err
    leftovers = [p.name for p in (tmp_path / "exports").iterdir() if p.name.startswith(".")]
    assert not leftovers, "temporary files left behind"
