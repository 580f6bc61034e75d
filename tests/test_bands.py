"""Multispectral models (`tfdeeplab.bands`, `DeepLabV3(input_shape=(H, W, bands))`): pretrained
RGB kernels kept on the RGB bands, extra bands starting at zero, per-band statistics inside the
model, and exports with N-band input."""

import keras
import numpy as np
import pytest

from converters import LiteRTModel, export_saved_model, export_tflite
from tfdeeplab import DeepLabV3
from tfdeeplab.bands import with_input_bands
from tfdeeplab.layers import BandNormalization

TINY = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 16}
SIZE = 48


def _randomized(model, seed=0):
    """Random classifier weights (it starts at zero: every argmax a tie)."""
    rng = np.random.default_rng(seed)
    for variable in model.get_layer("classifier").weights:
        variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
    return model


def _images(bands, seed=1, high=255.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, high, (2, SIZE, SIZE, bands)).astype(np.float32)


@pytest.mark.parametrize(
    ("backbone", "kwargs", "pointrend"),
    [("mobilenetv2", {"alpha": 0.35}, False), ("mobilenetv2", {"alpha": 0.35}, True),
     ("resnet50", {}, False)],
)  # fmt: skip
def test_a_widened_model_computes_the_rgb_model_whatever_the_extra_bands_hold(
    backbone, kwargs, pointrend
):
    rgb = _randomized(DeepLabV3(3, backbone, aspp_filters=16, pointrend=pointrend, **kwargs))
    five = with_input_bands(rgb, 5)
    assert type(five) is type(rgb) and five.input_shape == (None, None, None, 5)
    images = _images(3)
    extra = _images(2, seed=7, high=4000.0)
    expected = rgb.predict_on_batch(images)
    actual = five.predict_on_batch(np.concatenate([images, extra], axis=-1))
    np.testing.assert_allclose(actual, expected, atol=1e-4 * np.abs(expected).max())


def test_the_first_convolution_keeps_the_weights_files_kernels_and_zeros_the_rest(tmp_path):
    """A keras.applications weights file made here (no download): its Conv1 kernel lands on
    the bands named R, G, B; the fourth band's slice is zero."""
    application = keras.applications.MobileNetV2(
        include_top=False, weights=None, alpha=0.35, input_shape=(None, None, 3)
    )
    kernel = np.random.default_rng(2).normal(0, 1, application.get_layer("Conv1").kernel.shape)
    application.get_layer("Conv1").kernel.assign(kernel.astype("float32"))
    weights = tmp_path / "mobilenetv2_035.weights.h5"
    application.save_weights(weights)
    model = DeepLabV3(3, input_shape=(None, None, 4), rgb_bands=(2, 1, 0),
                      backbone_weights=str(weights), **TINY)  # fmt: skip
    widened = model.get_layer("backbone").get_layer("Conv1").kernel.numpy()
    assert widened.shape == (*kernel.shape[:2], 4, kernel.shape[3])
    np.testing.assert_allclose(widened[:, :, 2], kernel[:, :, 0], rtol=1e-6)  # R is band 2
    np.testing.assert_allclose(widened[:, :, 0], kernel[:, :, 2], rtol=1e-6)  # B is band 0
    assert not widened[:, :, 3].any()


@pytest.mark.parametrize(
    ("backbone", "kwargs", "pointrend"),
    [("resnet50", {}, False), ("mobilenetv2", {"alpha": 0.35}, True)],
)  # caffe mode's BGR kernels; PointRend's pixel rows
def test_reordered_bands_reach_the_kernels_of_their_colours(backbone, kwargs, pointrend):
    rgb = _randomized(DeepLabV3(3, backbone, aspp_filters=16, pointrend=pointrend, **kwargs))
    bgr = with_input_bands(rgb, 3, rgb_bands=(2, 1, 0))
    images = _images(3)
    expected = rgb.predict_on_batch(images)
    np.testing.assert_allclose(
        bgr.predict_on_batch(images[..., ::-1]), expected, atol=1e-4 * np.abs(expected).max()
    )


@pytest.mark.parametrize(
    ("backbone", "kwargs"), [("mobilenetv2", {"alpha": 0.35}), ("resnet50", {})]
)  # tf mode, and caffe mode whose first kernel reads BGR
def test_measured_band_statistics_make_16_bit_input_the_same_as_8_bit(backbone, kwargs):
    """Bands whose mean and std are 257× ImageNet's (8-bit values stretched to 16 bits) give
    the 8-bit model's logits on the stretched images: the normalisation is per band, inside."""
    rgb = _randomized(DeepLabV3(3, backbone, aspp_filters=16, **kwargs))
    mean = 257 * 255 * np.array([0.485, 0.456, 0.406])
    std = 257 * 255 * np.array([0.229, 0.224, 0.225])
    wide = with_input_bands(rgb, 3, band_mean=mean, band_std=std)
    layer = [lay for lay in wide.get_layer("backbone").layers if isinstance(lay, BandNormalization)]
    assert len(layer) == 1 and layer[0].band_mean == pytest.approx(list(mean))
    images = _images(3)
    expected = rgb.predict_on_batch(images)
    np.testing.assert_allclose(
        wide.predict_on_batch(images * 257), expected, atol=1e-4 * np.abs(expected).max()
    )
    with pytest.raises(ValueError, match="one value per band"):
        with_input_bands(rgb, 4, band_mean=mean, band_std=std)
    with pytest.raises(ValueError, match=r"rgb_bands=\(0, 1, 5\)"):
        DeepLabV3(3, input_shape=(None, None, 4), rgb_bands=(0, 1, 5), **TINY)
    with pytest.raises(ValueError, match="already takes 4 bands"):
        with_input_bands(with_input_bands(rgb, 4), 5)


def test_four_band_models_save_and_export_to_tflite_and_saved_model(tmp_path):
    import tensorflow as tf

    model = _randomized(DeepLabV3(3, input_shape=(None, None, 4), crop_size=SIZE, **TINY))
    images = _images(4)
    expected = model.predict_on_batch(images)
    model.save(tmp_path / "four.keras")
    loaded = keras.saving.load_model(tmp_path / "four.keras")
    np.testing.assert_allclose(loaded.predict_on_batch(images), expected, atol=1e-5)
    fp32 = export_tflite(model, tmp_path / "four.tflite", input_size=(SIZE, SIZE))
    int8 = export_tflite(model, tmp_path / "four_int8.tflite", "int8", (SIZE, SIZE),
                         representative_data=_images(4, seed=3), calibration_steps=2)  # fmt: skip
    for path, tolerance in ((fp32, 1e-3), (int8, None)):
        runner = LiteRTModel(path)
        assert runner.input_shape == (1, SIZE, SIZE, 4)
        assert "FlexConv2D" not in " ".join(runner.op_names)
        output = runner(images[:1])
        if tolerance:
            scale = np.abs(expected).max()
            np.testing.assert_allclose(output, expected[:1], atol=tolerance * scale)
        else:
            assert (output.argmax(-1) == expected[:1].argmax(-1)).mean() > 0.8
    served = export_saved_model(model, tmp_path / "saved")
    serve = tf.saved_model.load(str(served)).signatures["serving_default"]
    logits = serve(images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4 * np.abs(expected).max())
