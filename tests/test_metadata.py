"""Self-describing artifacts: metadata embedded by the exporters, read back without TensorFlow,
and used by `tfdeeplab predict` on .tflite files and SavedModels."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converters import LiteRTModel
from converters.metadata import config_digest, describe, embed_in_tflite, read_metadata
from converters.tflite import convert_to_tflite
from tfdeeplab.cli import main

SIZE = 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model saved as a training run saves it (config.json beside it), and its data."""
    from tfdeeplab import DeepLabV3
    from tfdeeplab.data import synthetic_scenes

    root = tmp_path_factory.mktemp("metadata")
    data = synthetic_scenes(root / "data", 6, SIZE, 4, seed=5)
    model = DeepLabV3(4, "mobilenetv2", alpha=0.35, aspp_filters=16, crop_size=SIZE)
    # The classifier starts at zero (ties everywhere): random weights give argmaxes to compare.
    rng = np.random.default_rng(0)
    for variable in model.get_layer("classifier").weights:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
    folder = root / "run"
    folder.mkdir()
    model.save(folder / "final.keras")
    config = {"backbone": "mobilenetv2", "output_stride": 16, "pointrend": False, "lr": 0.01}
    (folder / "config.json").write_text(json.dumps(config))
    common = ["--model", str(folder / "final.keras"), "--calibration-data", str(data),
              "--input-size", str(SIZE), "--val-fraction", "0.5"]  # fmt: skip
    tflite, served = root / "model_int8.tflite", root / "saved_model"
    assert main(["export", *common, "--format", "tflite", "--quantization", "int8",
                 "--calibration-steps", "2", "--out", str(tflite)]) == 0  # fmt: skip
    assert main(["export", *common, "--format", "saved_model", "--out", str(served)]) == 0
    return {"root": root, "data": data, "model": model, "config": config, "tflite": tflite,
            "saved_model": served}  # fmt: skip


def test_exported_files_describe_classes_input_output_and_training(run):
    classes = json.loads((run["data"] / "classes.json").read_text())
    for artifact in (run["tflite"], run["saved_model"]):
        metadata = read_metadata(artifact)
        assert [c["name"] for c in metadata["classes"]] == classes["names"]
        assert [c["colour"] for c in metadata["classes"]] == classes["colors"]
        assert metadata["training"]["config_sha256"] == config_digest(run["config"])
        assert metadata["training"]["backbone"] == "mobilenetv2"
        assert metadata["input"]["normalization"]["mode"] == "tf"
        assert metadata["input"]["colour_order"] == "RGB" and metadata["ignore_label"] == 255
        assert metadata["output"]["num_classes"] == 4 and metadata["output"]["kind"] == "logits"
    tflite = read_metadata(run["tflite"])
    assert tflite["quantization"] == "int8" and tflite["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert tflite["input"]["dtype"] == "float32" and tflite["output"]["dtype"] == "float32"
    assert read_metadata(run["saved_model"])["input"]["shape"] == [None, None, None, 3]


def test_metadata_is_read_in_a_process_without_tensorflow_or_tfdeeplab(run):
    script = (
        "import json, sys\n"
        "from converters.metadata import read_metadata\n"
        f"names = [c['name'] for c in read_metadata({str(run['tflite'])!r})['classes']]\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tfdeeplab', 'keras', 'ai_edge_litert'))\n"
        "print(json.dumps([names, loaded]))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root
    )
    names, loaded = json.loads(result.stdout)
    assert names == ["background", "disc", "box", "line"] and loaded == []


def test_the_saved_models_metadata_signature_returns_the_asset(run):
    import tensorflow as tf

    signature = tf.saved_model.load(str(run["saved_model"])).signatures["metadata"]
    text = signature()["metadata"].numpy().decode()
    assert json.loads(text) == read_metadata(run["saved_model"])


def test_embedding_keeps_the_graph_and_replaces_an_older_entry(run, tmp_path):
    raw = convert_to_tflite(run["model"], (1, SIZE, SIZE, 3))
    first = embed_in_tflite(raw, {"schema": "old"})
    path = tmp_path / "twice.tflite"
    path.write_bytes(embed_in_tflite(first, describe(run["model"])))
    assert read_metadata(path)["schema"] == "tfdeeplab.metadata/1"
    image = np.random.default_rng(0).uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(LiteRTModel(raw)(image), LiteRTModel(path)(image))
    assert LiteRTModel(raw).op_names == LiteRTModel(path).op_names


def test_files_without_metadata_are_named(run, tmp_path):
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(convert_to_tflite(run["model"], (1, SIZE, SIZE, 3)))
    with pytest.raises(ValueError, match=r"bare\.tflite: no 'tfdeeplab' metadata"):
        read_metadata(bare)
    (tmp_path / "notes.tflite").write_text("not a model")
    with pytest.raises(ValueError, match=r"notes\.tflite: not a TFLite flatbuffer"):
        read_metadata(tmp_path / "notes.tflite")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="folder: a folder without assets/"):
        read_metadata(tmp_path / "folder")


def test_predict_runs_artifacts_with_their_own_colours_at_the_photos_size(run, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    scene = Image.open(run["data"] / "images" / "scene_00000.png").convert("RGB")
    scene.resize((56, 30)).save(photos / "wide.png")  # not the file's 40×40 input
    colours = np.asarray(json.loads((run["data"] / "classes.json").read_text())["colors"])
    for name in ("tflite", "saved_model"):
        out = tmp_path / name
        assert main(["predict", "--model", str(run[name]), "--input", str(photos),
                     "--out", str(out)]) == 0  # fmt: skip
        mask = Image.open(out / "wide_mask.png")
        assert mask.size == (56, 30) and mask.mode == "P"
        palette = np.asarray(mask.getpalette()[: 3 * 4]).reshape(4, 3)
        np.testing.assert_array_equal(palette, colours)
    assert main(["predict", "--model", str(run["tflite"]), "--input", str(photos),
                 "--out", str(tmp_path / "x"), "--flip"]) == 2  # fmt: skip
    assert "--scales and --flip apply to .keras models" in capsys.readouterr().err


def test_an_exported_mask_matches_keras_away_from_borders(run):
    from converters.predictors import load_predictor

    image = np.asarray(
        Image.open(run["data"] / "images" / "scene_00001.png").convert("RGB"), np.float32
    )
    keras_mask = load_predictor(run["root"] / "run" / "final.keras")(image)
    for name in ("tflite", "saved_model"):
        mask = load_predictor(run[name])(image)
        assert mask.shape == image.shape[:2]
        assert np.mean(mask == keras_mask) > 0.9, name


def test_tiled_prediction_runs_artifacts_and_a_fixed_file_sets_the_window(run):
    from tfdeeplab import predict_tiled

    image = np.random.default_rng(1).uniform(0, 255, (100, 90, 3)).astype(np.float32)
    expected = predict_tiled(run["model"], image, SIZE, 8, progress=False)["classes"]
    served = predict_tiled(run["saved_model"], image, SIZE, 8, progress=False)
    assert (served["classes"] == expected).mean() > 0.999
    tflite = predict_tiled(run["tflite"], image, overlap=8, progress=False)
    assert tflite["tile_size"] == SIZE and tflite["tiles"] == 3 * 3
    assert (tflite["classes"] == expected).mean() > 0.9  # int8
    with pytest.raises(ValueError, match="fixed 40×40 input; use --tile 40"):
        predict_tiled(run["tflite"], image, tile_size=64, progress=False)
