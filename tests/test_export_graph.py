"""Export-time graph edits: the input normalisation folded into the first convolution, and
int8 files that upsample their logits in float."""

import keras
import numpy as np
import pytest

from converters import export_tflite
from converters.folding import fold_input_normalization
from converters.litert import LiteRTModel
from tests.conftest import EXPORT_SIZE
from tfdeeplab import get_backbone
from tfdeeplab.layers.image_normalization import ImageNormalization


def _first_conv_outputs(backbone, name, images):
    return keras.Model(backbone.input, backbone.get_layer(name).output)(images).numpy()


@pytest.mark.parametrize(
    "name, kwargs, conv",
    [
        ("mobilenetv2", {"alpha": 0.35}, "Conv1"),  # "tf" mode, 'same' padding
        ("xception", {}, "block1_conv1"),  # "tf" mode, no padding
        ("resnet50", {}, "conv1_conv"),  # "caffe" (BGR, per-channel mean), a ZeroPadding2D
        ("mobilenet_v3_large_tv", {}, "0.0"),  # "torch" (mean and std per channel)
    ],
)
@pytest.mark.parametrize("size", [33, 32])
def test_normalisation_folds_into_the_first_convolution_with_the_same_values(
    name, kwargs, conv, size
):
    """The folded convolution gives what the normalised image gave, borders included, at odd
    and even sizes (TensorFlow's 'same' pads them differently)."""
    backbone = get_backbone(name, 16, input_shape=(None, None, 3), **kwargs)
    folded, names = fold_input_normalization(backbone)
    assert names == [conv]
    images = np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)).astype("float32")
    expected = _first_conv_outputs(backbone, conv, images)
    actual = _first_conv_outputs(folded, f"{conv}_on_raw_pixels", images)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=2e-5 * np.abs(expected).max())
    assert not any(isinstance(layer, ImageNormalization) for layer in folded.layers)
    assert fold_input_normalization(folded) == (folded, [])


ALIGNED = 65  # 8k + 1: no alignment padding in front of the first convolution


@pytest.fixture(scope="module")
def exports(trained_tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("graph")
    images = np.random.default_rng(0).uniform(0, 255, (4, ALIGNED, ALIGNED, 3)).astype("float32")
    paths = {
        kind: export_tflite(trained_tiny, folder / f"{kind}.tflite", kind, ALIGNED, images, 4)
        for kind in ("none", "int8")
    }
    paths["mask"] = export_tflite(
        trained_tiny, folder / "mask.tflite", "int8", ALIGNED, images, 4, output="mask",
        io_type="uint8",
    )  # fmt: skip
    paths["cropped"] = export_tflite(trained_tiny, folder / "cropped.tflite", "int8",
                                     EXPORT_SIZE, images, 4)  # fmt: skip
    return paths


def test_files_take_raw_pixels_straight_into_the_first_convolution(exports):
    assert LiteRTModel(exports["none"]).op_names[:2] == ["SUB", "CONV_2D"]
    assert LiteRTModel(exports["int8"]).op_names[:3] == ["QUANTIZE", "SUB", "CONV_2D"]
    assert "MUL" not in LiteRTModel(exports["none"]).op_names  # nor the ASPP's BN scale
    # where the model pads the image to 8k + 1 first, it keeps its normalisation (folding)
    assert "MUL" in LiteRTModel(exports["cropped"]).op_names


def _output_dtype(model):
    interpreter = model.plain_interpreter()
    last = interpreter._get_ops_details()[-1]
    return interpreter._get_tensor_details(last["outputs"][0], 0)["dtype"]


def test_int8_files_with_float_logits_upsample_in_float(exports):
    int8, cropped = LiteRTModel(exports["int8"]), LiteRTModel(exports["cropped"])
    assert int8.op_names[-2:] == ["DEQUANTIZE", "RESIZE_BILINEAR"]
    assert cropped.op_names[-3:] == ["DEQUANTIZE", "RESIZE_BILINEAR", "STRIDED_SLICE"]
    assert _output_dtype(int8) == _output_dtype(cropped) == np.float32
    # a phone's file (bytes in, class ids out) stays integer to the end
    assert LiteRTModel(exports["mask"]).op_names[-3:] == ["RESIZE_BILINEAR", "ARG_MAX", "CAST"]
    for key, path in exports.items():
        model = LiteRTModel(path)
        size = EXPORT_SIZE if key == "cropped" else ALIGNED
        model(np.zeros((1, size, size, 3), "float32"))
        assert model.delegation()["partitions"] == 1, key
