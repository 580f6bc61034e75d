"""The tf_keras bridge and quantization-aware training through TFMOT."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from converters import (
    QATOptions,
    export_tflite,
    quantization_aware_training,
    to_tf_keras,
    verify,
)
from converters.qat import calibrate_activation_ranges, quantize_aware_model
from tests.helpers import (
    TINY_KWARGS,
    assert_clean_graph,
    backbone_params,
    cell_images,
    images,
    randomize_batchnorm,
    relative_error,
)
from tfdeeplab import BACKBONES, DeepLabV3

SIZE = 64
TINY = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 16}


@pytest.mark.parametrize("backbone", backbone_params(BACKBONES))
def test_bridge_reproduces_the_keras3_model_before_quantization(backbone):
    model = DeepLabV3(3, backbone, output_stride=8, aspp_filters=16, **TINY_KWARGS[backbone])
    randomize_batchnorm(model)
    x = images(2, SIZE, SIZE)
    expected = model.predict(x, verbose=0)
    rebuilt = to_tf_keras(model, (SIZE, SIZE))
    assert isinstance(rebuilt, tf_keras.Model)
    assert rebuilt.count_params() == model.count_params()
    assert (
        relative_error(rebuilt.predict(x, verbose=0), expected) <= 1e-5
    )  # float32 rounding: a dilated conv runs other kernels
    dynamic = to_tf_keras(model)  # H and W stay dynamic without an input size
    odd = images(1, 47, 65)
    assert (
        relative_error(dynamic(odd), model(odd)) <= 1e-5
    )  # float32 rounding: a dilated conv runs other kernels


@pytest.mark.parametrize("image_features", [False, True])
def test_bridge_reproduces_pointrend(image_features):
    model = DeepLabV3(3, pointrend=True, pointrend_image_features=image_features, **TINY)
    randomize_batchnorm(model)
    x = images(2, SIZE, SIZE)
    rebuilt = to_tf_keras(model, (SIZE, SIZE))
    assert (
        relative_error(rebuilt(x), model(x)) <= 1e-5
    )  # float32 rounding: a dilated conv runs other kernels


def test_bridge_names_a_layer_it_cannot_translate():
    @keras.saving.register_keras_serializable(package="tests")
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    image = keras.Input((None, None, 3))
    model = keras.Model(image, Doubling(name="double_it")(image))
    with pytest.raises(ValueError, match=r"layer 'double_it' \(Doubling\) has no tf_keras"):
        to_tf_keras(model)


@pytest.mark.slow
@pytest.mark.parametrize(
    "pointrend",  # grouped with the other users of the fixture it takes (see conftest)
    [
        pytest.param(False, marks=pytest.mark.xdist_group("trained_tiny")),
        pytest.param(True, marks=pytest.mark.xdist_group("trained_tiny_pointrend")),
    ],
)
def test_qat_fine_tunes_and_exports_full_integer(pointrend, tmp_path, request):
    model = request.getfixturevalue("trained_tiny_pointrend" if pointrend else "trained_tiny")
    train = tf.data.Dataset.from_tensor_slices(cell_images(16, SIZE, seed=0)).batch(4)
    check = tf.data.Dataset.from_tensor_slices(cell_images(6, SIZE, seed=0)).batch(2)
    fp32 = export_tflite(model, tmp_path / "fp32.tflite", input_size=SIZE)
    before = [w.copy() for w in model.get_weights()]
    options = QATOptions(epochs=1, verbose=0)
    qat = export_tflite(model, tmp_path / "qat.tflite", "qat", SIZE, train, 16, qat=options)
    for a, b in zip(before, model.get_weights(), strict=True):  # the Keras 3 model is untouched
        np.testing.assert_array_equal(a, b)
    report = verify(qat, model, check)
    # The converter quantizes the shared point-head weights once per subdivision step (4
    # int8 copies down to stride 1, measured); at this tiny width the head is a fifth of the
    # model. Measured 0.41 (0.46 with PointRend): per-channel scales and zero points weigh
    # much in this tiny net (see test_converters).
    assert report.size_bytes < fp32.stat().st_size / (2.0 if pointrend else 2.2)
    # Fine-tuning goes on training, so the file is judged by its mIoU, not by agreement with
    # the float model it left.
    # Measured on 6 images at 64×64 with PointRend: -0.06 points (agreement 99.65%) since the
    # refiner concatenates nothing in int8; 9.5 and 12.9 points before, when its
    # concatenations clipped the logits to the fine features' fake-quant range (issue 17).
    assert report.miou_drop <= 3
    assert {"QUANTIZE", "CONV_2D"} <= set(report.ops)
    assert ("TOPK_V2" in report.ops) == pointrend
    assert_clean_graph(report.ops)


def test_calibration_sets_activation_ranges_from_data():
    model = DeepLabV3(3, **TINY)
    qat = quantize_aware_model(to_tf_keras(model, (SIZE, SIZE)))
    normalization = qat.get_layer("quant_normalization")  # TF mode: RGB [0, 255] → [-1, 1]
    ranges = {w.name.split("/")[-1]: w for w in normalization.weights}
    assert float(ranges["output_max:0"].numpy()) == 6.0  # TFMOT's starting range
    x = np.zeros((2, SIZE, SIZE, 3), "float32")
    x[0, 0, 0], x[1, 0, 1] = 255.0, 127.5  # the extremes, 1 and 0 after normalisation
    calibrate_activation_ranges(qat, [x] * 30, batches=30)
    assert ranges["output_max:0"].numpy() == pytest.approx(1.0, abs=1e-3)
    assert ranges["output_min:0"].numpy() == pytest.approx(-1.0, abs=1e-3)


def test_qat_refuses_zero_epochs_before_any_work():
    model = DeepLabV3(3, **TINY)
    with pytest.raises(ValueError, match="epochs=0 must be"):
        quantization_aware_training(model, None, (SIZE, SIZE), QATOptions(epochs=0))


def test_a_caffe_mode_qat_file_computes_what_its_fake_quant_model_does():
    """RGB → BGR + ImageNet mean (ResNet, VGG) in a QAT file: as a 1×1 permutation
    convolution it converts exactly; as tf.reverse the converted file's normalised image was
    83% off and a CamVid ResNet-50 agreed with its own fake-quant model on 74% of pixels."""
    from converters import convert_to_tflite
    from converters.litert import LiteRTModel
    from converters.tf_keras_bridge import Affine

    inputs = tf_keras.Input((16, 16, 3))
    normalised = Affine([1.0] * 3, [-103.939, -116.779, -123.68], True, name="norm")(inputs)
    outputs = tf_keras.layers.Conv2D(4, 3, padding="same", name="conv")(normalised)
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    x[..., 0] *= 0.3  # colours unlike each other, so a wrong channel order shows
    qat = quantize_aware_model(tf_keras.Model(inputs, outputs))
    calibrate_activation_ranges(qat, [x] * 20, batches=20)
    model = LiteRTModel(convert_to_tflite(qat, (1, 16, 16, 3), "qat", x, 8))
    expected = qat(x[:2], training=False).numpy()
    actual = np.concatenate([model(x[i : i + 1]) for i in range(2)])
    assert relative_error(actual, expected) < 0.05
    assert "REVERSE_V2" not in model.op_names
