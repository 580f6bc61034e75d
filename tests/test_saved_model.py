"""converters.export_saved_model: serving signatures, fresh-process loading, saved_model_cli."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from converters import export_saved_model, verify
from tests.helpers import images, randomize_batchnorm
from tfdeeplab import DeepLabV3

# Runs in a new interpreter: plain TensorFlow, and proof that tfdeeplab was never imported.
SERVE_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
out = loaded.signatures["serving_default"](images=tf.constant(x))
png = open(sys.argv[3], "rb").read()
encoded = loaded.signatures["serve_encoded"](images=tf.constant([png, png]))
print(json.dumps({
    "logits": out["logits"].numpy().tolist(),
    "mask": out["mask"].numpy().tolist(),
    "mask_dtype": out["mask"].dtype.name,
    "encoded_mask": encoded["mask"].numpy().tolist(),
    "tfdeeplab_imported": any(name.startswith(("tfdeeplab", "converters")) for name in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = DeepLabV3(3, backbone="mobilenetv2", alpha=0.35, aspp_filters=16)
    randomize_batchnorm(model)
    path = export_saved_model(model, tmp_path_factory.mktemp("export") / "saved_model")
    return model, Path(path)


def png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_fresh_process_serves_floats_and_encoded_images_without_tfdeeplab(exported, tmp_path):
    model, path = exported
    x = images(2, 40, 56)  # any size: H and W are dynamic
    np.save(tmp_path / "x.npy", x)
    pixels = np.round(x[0])
    (tmp_path / "image.png").write_bytes(png_bytes(pixels))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_SCRIPT,
            str(path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "image.png"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert not served["tfdeeplab_imported"]
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(served["logits"], expected, atol=1e-4)
    assert served["mask_dtype"] == "int32"
    np.testing.assert_array_equal(served["mask"], expected.argmax(-1))
    from_png = model.predict(pixels[None], verbose=0).argmax(-1)[0]
    np.testing.assert_array_equal(served["encoded_mask"], [from_png, from_png])


def test_saved_model_cli_runs_the_default_signature(exported, tmp_path):
    _, path = exported
    np.save(tmp_path / "x.npy", np.full((1, 32, 48, 3), 128.0, np.float32))
    cli = Path(sys.executable).with_name("saved_model_cli")
    subprocess.run(  # check=True: a failing run raises with its exit status
        [
            str(cli),
            "run",
            "--dir",
            str(path),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={tmp_path / 'x.npy'}",
            "--outdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert np.load(tmp_path / "mask.npy").shape == (1, 32, 48)
    assert np.load(tmp_path / "logits.npy").shape == (1, 32, 48, 3)


def test_each_weight_is_stored_once(exported):
    model, path = exported
    stored = tf.train.list_variables(str(path / "variables" / "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored if shape)
    assert values == model.count_params()


def test_mixed_sizes_in_one_request_are_refused_by_name(exported):
    _, path = exported
    loaded = tf.saved_model.load(str(path))
    small, large = png_bytes(np.zeros((8, 8, 3))), png_bytes(np.zeros((8, 16, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the same size"):
        loaded.signatures["serve_encoded"](images=tf.constant([small, large]))


def test_verify_a_saved_model_and_refuse_to_overwrite(exported):
    model, path = exported
    report = verify(path, model, [images(2, 48, 48)])
    assert report.format == "saved_model" and report.agreement == 1.0
    assert report.max_logit_error <= 1e-4 and {"Conv2D", "DepthwiseConv2dNative"} <= set(report.ops)
    # Dilated depthwise convolutions keep space-to-batch in TF graphs: TF's Eigen CPU kernel
    # has no dilated DepthwiseConv2dNative (see tfdeeplab.layers.atrous).
    with pytest.raises(FileExistsError, match="saved_model' exists"):
        export_saved_model(model, path)


def test_a_failed_export_leaves_no_folder(tmp_path, monkeypatch):
    model = DeepLabV3(3, backbone="mobilenetv2", alpha=0.35, aspp_filters=16)

    def crash(module, directory, signatures):
        (Path(directory) / "saved_model.pb").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(model, tmp_path / "saved_model")
    assert list(tmp_path.iterdir()) == []
