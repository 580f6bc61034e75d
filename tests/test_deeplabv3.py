import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import assert_litert_matches, assert_save_load_equal, cell_images, images
from tfdeeplab import DeepLabV3
from tfdeeplab.deeplabv3 import auto_aspp_rates, default_aspp_rates

TINY = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 16}


def tiny(num_classes=3, **kwargs):
    return DeepLabV3(num_classes, **{**TINY, **kwargs})


@pytest.mark.parametrize("size", [(64, 64), (65, 63), (321, 479)])
def test_logits_have_the_input_size_for_any_size(size):
    model = tiny(4)
    logits = model(images(1, *size))
    assert tuple(logits.shape) == (1, *size, 4)
    assert logits.dtype == "float32"


def test_auto_rates_scale_to_the_crop_and_too_large_rates_warn():
    assert auto_aspp_rates(16, 513) == (6, 12, 18) and auto_aspp_rates(8, 513) == (12, 24, 36)
    assert auto_aspp_rates(16, 192) == (2, 4, 7)  # a 12-cell map
    assert auto_aspp_rates(16, 32) == (1, 1, 1)
    assert tiny(crop_size=192).get_layer("aspp").rates == (2, 4, 7)
    assert tiny(input_shape=(256, 256, 3)).get_layer("aspp").rates == (3, 6, 9)
    with pytest.warns(UserWarning, match=r"aspp_rates \[12, 18\] do not fit the 12-cell"):
        model = tiny(aspp_rates=(6, 12, 18), input_shape=(192, 192, 3))
    assert model.get_layer("aspp").rates == (6, 12, 18)  # a warning, not an error
    with pytest.warns(UserWarning, match="'auto' gives \\(2, 4, 7\\)"):
        tiny(aspp_rates=(6, 12, 18), crop_size=192)


def test_rates_scale_with_output_stride():
    assert default_aspp_rates(16) == (6, 12, 18)
    assert default_aspp_rates(8) == (12, 24, 36)
    assert tiny(output_stride=8).get_layer("aspp").rates == (12, 24, 36)
    assert tiny(aspp_rates=(2, 4)).get_layer("aspp").rates == (2, 4)


def test_light_head_has_only_image_pooling_and_the_1x1_branch():
    """aspp_rates=() (`--aspp-rates none`): DeepLab's mobile head, no 3×3 branch."""
    from tfdeeplab.options import parse_aspp_rates

    model = tiny(aspp_rates=())
    aspp = model.get_layer("aspp")
    assert aspp.rates == () and len(aspp.branches) == 1
    assert aspp.projection[0].kernel.shape[-2] == 2 * aspp.filters  # 1×1 + image pooling
    ops = assert_litert_matches(model, images(1, 64, 64))
    assert ops.count("CONV_2D") < assert_litert_matches(tiny(), images(1, 64, 64)).count("CONV_2D")
    assert parse_aspp_rates("none") == () and parse_aspp_rates("auto") == "auto"
    assert parse_aspp_rates("6,12,18") == (6, 12, 18)


def test_batchnorm_momentum_reaches_every_layer():
    def momenta(model):
        return {
            layer.momentum
            for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)
        }

    assert momenta(tiny()) == {0.999, 0.99}  # MobileNetV2's own, and ASPP's default
    assert momenta(tiny(batchnorm_momentum=0.9)) == {0.9}


def test_resnet50_os16_trainable_weight_count_is_exact():
    model = DeepLabV3(21, backbone="resnet50", output_stride=16)
    resnet = keras.applications.ResNet50(weights=None, include_top=False)
    backbone = sum(int(np.prod(w.shape)) for w in resnet.trainable_weights)
    c, f, k = 2048, 256, 21  # backbone channels, ASPP filters, classes
    bn = 2 * f  # gamma and beta of each BatchNormalization
    aspp = (c * f + bn) + 3 * (9 * c * f + bn) + (c * f + bn) + (5 * f * f + bn)
    classifier = f * k + k
    assert backbone == 23_534_592  # keras.applications' documented ResNet50 trainable count
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == backbone + aspp + classifier == 39_075_093


def test_save_load_and_config_round_trip(tmp_path):
    model = tiny(5, output_stride=8)
    x = images(2, 48, 40)
    restored = assert_save_load_equal(model, x, tmp_path)
    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), restored.predict(x, verbose=0))


def test_saved_model_serves_any_size(tmp_path):
    """Dynamic H and W survive SavedModel export (OS 8 has dilated depthwise convolutions)."""
    model = tiny(3, output_stride=8)
    model.export(str(tmp_path / "saved_model"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved_model"))
    for size in [(64, 64), (65, 47)]:
        x = images(1, *size)
        np.testing.assert_allclose(served.serve(x), model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_full_model_converts_to_litert_with_parity(output_stride):
    model = tiny(3, output_stride=output_stride)
    x = images(1, 64, 64)
    for dynamic_size in (True, False):
        ops = assert_litert_matches(model, x, dynamic_size=dynamic_size)
        assert "RESIZE_BILINEAR" in ops


def test_fit_learns_a_colour_to_class_task(trained_tiny):
    """A learnable toy task (each cell's class is its brightest channel), fitted once per session
    by the `trained_tiny` fixture that the export tests share: `fit` lowered the loss."""
    losses = trained_tiny.history.history["loss"]
    assert len(losses) == 45 and losses[-1] < 0.5 * losses[0], losses
    x, y = cell_images(32, 64, seed=0)  # the fixture's training images
    accuracy = np.mean(np.asarray(trained_tiny(x, training=False)).argmax(-1) == y)
    assert accuracy > 0.8, accuracy  # measured 0.90 for three seeds; 1/3 by chance


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "num_classes=0 must be an integer ≥ 1"),
        ({"backbone": "resnet34"}, "backbone='resnet34' is not supported; choose one of"),
        ({"output_stride": 4}, "output_stride=4 is not supported; choose one of: 8, 16, 32"),
        ({"aspp_rates": (6, -1)}, "must be positive integers, e.g. \\(6, 12, 18\\)"),
        ({"aspp_rates": "paper"}, "must be 'auto' or positive integers"),
        ({"input_shape": (64, 64, 0)}, "must be \\(H, W, bands\\)"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepLabV3(**{"num_classes": 3, **TINY, **kwargs})
