"""tfdeeplab.from_torchvision against real torchvision outputs (tests/fixtures/torchvision,
written by `python -m benchmarks.torchvision_fixture` in an environment with torchvision): the
weights are regenerated here from the fixture's key names and shapes, so no torch is needed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import torchvision_fixture as fixture
from converters import LiteRTModel, export_saved_model, export_tflite
from tests.helpers import assert_clean_graph, assert_save_load_equal, relative_error
from tfdeeplab.torchvision_port import ARCHS, StateDictError, from_torchvision, read_state_dict

MOBILE = "deeplabv3_mobilenet_v3_large"


def reference(arch):
    """(fixture metadata, the seeded state dict, torchvision's stored outputs)."""
    meta = json.loads((fixture.FOLDER / f"{arch}.json").read_text())
    state = fixture.seeded_state_dict(meta["shapes"], meta["gain"])
    with np.load(fixture.FOLDER / f"{arch}.npz") as saved:
        outputs = {key: saved[key] for key in saved.files}
    return meta, state, outputs


def images_of(outputs):
    return [outputs[f"image{i}"].astype(np.float32)[None] for i in range(len(fixture.SIZES))]


@pytest.fixture(scope="module", params=list(ARCHS))
def imported(request):
    arch = request.param
    meta, state, outputs = reference(arch)
    assert fixture.checksum(state) == pytest.approx(meta["checksum"], rel=1e-12), (
        "seeded_state_dict no longer draws the weights the fixture was made with "
        f"(numpy {np.__version__}, fixture: numpy {meta['numpy']}): regenerate the fixture"
    )
    return arch, from_torchvision(arch, state, aux=True), outputs


def test_logits_equal_torchvision_within_1e4_of_their_scale(imported):
    arch, model, outputs = imported
    stride = fixture.STRIDE
    for index, image in enumerate(images_of(outputs)):
        logits = np.asarray(model(image, training=False))[0]
        assert logits.shape == (*image.shape[1:3], fixture.NUM_CLASSES)
        error = np.abs(logits[::stride, ::stride] - outputs[f"logits{index}"]).max()
        assert error <= 1e-4 * outputs[f"scale{index}"], (arch, index, error)  # measured ≤ 1.6e-6
        np.testing.assert_array_equal(logits.argmax(-1), outputs[f"argmax{index}"])


def test_auxiliary_head_equals_torchvision_fcn_head(imported):
    _, model, outputs = imported
    head, backbone = model.get_layer("aux_classifier"), model.get_layer("backbone")
    for index, image in enumerate(images_of(outputs)):
        mid = backbone(image, training=False)["mid"]
        aux = head.training_outputs(None, mid, image, image, training=False)["aux_logits"]
        expected = outputs[f"aux{index}"]
        assert (
            relative_error(np.asarray(aux)[0, :: fixture.STRIDE, :: fixture.STRIDE], expected)
            <= 1e-4
        )


@pytest.fixture(scope="module")
def mobile():
    _, state, outputs = reference(MOBILE)
    return state, outputs


def test_npz_and_safetensors_files_load_the_same_weights(mobile, tmp_path):
    from safetensors.numpy import save_file

    state, outputs = mobile
    floats = {k: v for k, v in state.items() if v.dtype == np.float32}
    np.savez(tmp_path / "weights.npz", **floats)
    save_file(floats, str(tmp_path / "weights.safetensors"))
    image = images_of(outputs)[0]
    expected = np.asarray(from_torchvision(MOBILE, state)(image))
    for name in ("weights.npz", "weights.safetensors"):
        model = from_torchvision(MOBILE, tmp_path / name)
        np.testing.assert_array_equal(np.asarray(model(image)), expected)


def test_pth_without_torch_says_how_to_get_an_npz(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs PyTorch \(pip install torch\).*\.npz"):
        read_state_dict(tmp_path / "w.pth")


@pytest.mark.parametrize(
    "change, options, message",
    [
        (
            lambda s: s.pop("backbone.0.1.running_var"),
            {},
            r"missing key 'backbone.0.1.running_var' \(expected shape \(16,\)\)",
        ),
        (
            lambda s: s.update({"backbone.99.weight": np.zeros(3, np.float32)}),
            {},
            r"unexpected key 'backbone.99.weight' \(shape \(3,\)\)",
        ),
        (
            lambda s: s.update({"classifier.1.weight": np.zeros((256, 256, 1, 1), np.float32)}),
            {},
            r"key 'classifier.1.weight' has shape \(256, 256, 1, 1\), expected \(256, 256, 3, 3\)",
        ),
        (
            lambda s: None,
            {"num_classes": 5},
            r"key 'classifier.4.weight' has shape \(21, 256, 1, 1\), expected \(5, 256, 1, 1\)",
        ),
        (
            lambda s: [s.pop(k) for k in list(s) if k.startswith("aux_classifier.")],
            {"aux": True},
            r"missing key 'aux_classifier.0.weight' \(expected shape \(10, 40, 3, 3\)\)",
        ),
    ],
    ids=["missing", "unexpected", "misshaped", "num_classes", "aux"],
)
def test_state_dict_errors_name_the_key_and_the_expected_shape(mobile, change, options, message):
    state = dict(mobile[0])
    change(state)
    with pytest.raises(StateDictError, match=message):
        from_torchvision(MOBILE, state, **options)


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="arch='deeplabv3_resnet18' is unknown; choose one of: "):
        from_torchvision("deeplabv3_resnet18", {})
    with pytest.raises(ValueError, match=r"unknown file type '.h5'; choose a .pth, .pt"):
        read_state_dict(tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match=r"w\.npz does not exist"):
        read_state_dict(tmp_path / "w.npz")
    with pytest.raises(StateDictError, match="not a torchvision DeepLabV3 state dict"):
        from_torchvision(MOBILE, {"fc.weight": np.zeros((2, 2), np.float32)})


SERVE = """
import sys, numpy as np, tensorflow as tf
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
np.save(sys.argv[3], served(images=tf.constant(np.load(sys.argv[2])))["logits"].numpy())
"""


def test_imported_model_exports_and_round_trips(mobile, tmp_path):
    """fp32 and int8 TFLite with builtin ops only (dilated kernels, no SPACE_TO_BATCH_ND), a
    SavedModel served by plain TensorFlow in a fresh process, and `.keras` save/load."""
    state, outputs = mobile
    model = from_torchvision(MOBILE, state, aux=True)
    image = images_of(outputs)[0]  # 97×97
    expected = np.asarray(model(image, training=False))
    fp32 = LiteRTModel(export_tflite(model, tmp_path / "fp32.tflite", input_size=(97, 97)))
    assert relative_error(fp32(image), expected) <= 1e-4
    assert {"HARD_SWISH", "DEPTHWISE_CONV_2D"} <= set(fp32.op_names)
    assert_clean_graph(fp32.op_names)
    calibration = [image, images_of(outputs)[1][:, :97, :97]]
    path = export_tflite(model, tmp_path / "int8.tflite", "int8", (97, 97), calibration, 2)
    int8 = LiteRTModel(path)
    assert (
        "QUANTIZE" in int8.op_names
        and path.stat().st_size < (tmp_path / "fp32.tflite").stat().st_size / 3
    )
    assert_clean_graph(int8.op_names)
    saved = export_saved_model(model, tmp_path / "saved_model")
    np.save(tmp_path / "x.npy", image)
    subprocess.run(
        [sys.executable, "-c", SERVE, str(saved), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
        capture_output=True,
    )
    assert relative_error(np.load(tmp_path / "y.npy"), expected) <= 1e-5
    restored = assert_save_load_equal(model, image, tmp_path, atol=1e-5)
    assert restored.get_layer("aux_classifier").runs_at_inference is False


@pytest.mark.slow
def test_resnet50_exports_its_dilated_convolutions_as_single_kernels(tmp_path):
    _, state, outputs = reference("deeplabv3_resnet50")
    model = from_torchvision("deeplabv3_resnet50", state)
    image = images_of(outputs)[0]
    litert = LiteRTModel(export_tflite(model, Path(tmp_path) / "fp32.tflite", input_size=(97, 97)))
    assert relative_error(litert(image), np.asarray(model(image, training=False))) <= 1e-4
    assert_clean_graph(litert.op_names)


def test_import_torchvision_command_writes_a_model_predict_uses(mobile, tmp_path, capsys):
    from PIL import Image

    from tfdeeplab.cli import main

    state, outputs = mobile
    np.savez(tmp_path / "w.npz", **state)
    out = tmp_path / "model.keras"
    command = ["import-torchvision", "--arch", MOBILE, "--weights", str(tmp_path / "w.npz")]
    assert main([*command, "--out", str(out)]) == 0
    assert f"Wrote {out}: torchvision {MOBILE}, 21 classes" in capsys.readouterr().out
    Image.fromarray(outputs["image0"]).save(tmp_path / "image.png")
    assert main(["predict", "--model", str(out), "--input", str(tmp_path / "image.png"),
                 "--out", str(tmp_path / "pred")]) == 0  # fmt: skip
    mask = np.asarray(Image.open(tmp_path / "pred" / "image_mask.png"))
    np.testing.assert_array_equal(mask, outputs["argmax0"])
    assert main([*command, "--out", str(out)]) == 2  # exists: needs --overwrite
    assert main([*command, "--out", str(out), "--overwrite", "--num-classes", "5"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("tfdeeplab import-torchvision: error: the state dict does not fit")
    assert "key 'classifier.4.weight' has shape (21, 256, 1, 1), expected (5, 256, 1, 1)" in error


def classifier_state(state, arch):
    """The state dict of torchvision's ImageNet classifier with the fixture's trunk weights:
    DeepLabV3's "backbone." keys renamed as in `resnet50` / `mobilenet_v3_large`, plus a
    classifier (which the backbone must drop)."""
    resnet = "resnet" in arch
    prefix, head = ("", "fc") if resnet else ("features.", "classifier.0")
    renamed = {
        k.replace("backbone.", prefix, 1): v for k, v in state.items() if k.startswith("backbone.")
    }
    renamed[f"{head}.weight"] = np.zeros((1000, 2048 if resnet else 960), np.float32)
    return renamed


@pytest.mark.parametrize(
    "arch, name, stride",
    [("deeplabv3_resnet50", "resnet50_tv", 8), (MOBILE, "mobilenet_v3_large_tv", 16)],
)
def test_torchvision_backbones_take_the_classifiers_state_dict(arch, name, stride):
    import tfdeeplab

    _, state, outputs = reference(arch)
    trunk = tfdeeplab.get_backbone(name, stride, weights=classifier_state(state, arch), mid=True)
    assert trunk.name == f"{name}_os{stride}"
    image = images_of(outputs)[1]
    expected = from_torchvision(arch, state).get_layer("backbone")(image)
    for key, value in trunk(image).items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected[key]))
    model = tfdeeplab.DeepLabV3(3, backbone=name, output_stride=stride, crop_size=97)
    assert model(image).shape == (1, 130, 98, 3)


def test_torchvision_backbone_mistakes_name_the_argument():
    import tfdeeplab
    from tfdeeplab.config import TrainConfig

    with pytest.raises(ValueError, match="output_stride=8 is not supported by backbone="):
        tfdeeplab.get_backbone("mobilenet_v3_large_tv", 8)
    with pytest.raises(ValueError, match="takes neither multi_grid nor alpha"):
        tfdeeplab.get_backbone("resnet50_tv", 16, multi_grid=(1, 2, 4))
    with pytest.raises(ValueError, match="'resnet101_tv'"):
        TrainConfig(data="d", out="o", backbone="resnet18")
    assert TrainConfig(data="d", out="o", backbone="resnet50_tv").backbone == "resnet50_tv"


def test_train_init_fine_tunes_an_imported_model_with_a_new_pointrend_head(mobile, tmp_path):
    """torchvision's 21 classes → the data's 4 (a new classifier), plus a PointRend head."""
    import keras

    from tfdeeplab.cli import main
    from tfdeeplab.data import synthetic_scenes
    from tfdeeplab.deeplabv3 import PointRendDeepLab

    state, _ = mobile
    np.savez(tmp_path / "w.npz", **state)
    imported = tmp_path / "imported.keras"
    assert main(["import-torchvision", "--arch", MOBILE, "--weights", str(tmp_path / "w.npz"),
                 "--out", str(imported)]) == 0  # fmt: skip
    data = synthetic_scenes(tmp_path / "data", 8, 48, 4, seed=1)
    run = tmp_path / "run"
    assert main(["train", "--init", str(imported), "--pointrend", "--data", str(data),
                 "--out", str(run), "--image-size", "48", "--batch-size", "2", "--epochs", "1",
                 "--steps-per-epoch", "2", "--val-fraction", "0.25",
                 "--lr", "1e-5"]) == 0  # fmt: skip
    model = keras.saving.load_model(run / "final.keras")
    assert isinstance(model, PointRendDeepLab) and model.output_shape[-1] == 4
    before = from_torchvision(MOBILE, state).get_layer("backbone").get_layer("0.0").get_weights()
    after = model.get_layer("backbone").get_layer("0.0").get_weights()
    assert not np.array_equal(before[0], after[0])  # it trained, from the imported weights:
    assert np.abs(before[0] - after[0]).max() < 1e-2 * np.abs(before[0]).max()  # measured 1.3e-3
