"""DeepLabV3+'s decoder (`DeepLabV3(decoder=True)`): stride-4 logits from the ASPP features and
the backbone's stride-4 map, exported as builtins, bridged to tf_keras, trained with PointRend."""

import keras
import numpy as np
import pytest

from converters.tf_keras_bridge import to_tf_keras
from tests.helpers import (
    assert_litert_matches,
    assert_save_load_equal,
    images,
    randomize_batchnorm,
    relative_error,
)
from tfdeeplab import DeepLabV3
from tfdeeplab.layers.decoder import deeplabv3plus_decoder
from tfdeeplab.losses import SegmentationLoss

TINY = {"backbone": "mobilenetv2", "alpha": 0.35, "aspp_filters": 8}
SIZE = 65  # 32·2 + 1: stride-16 cells 5, stride-4 cells 17


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(5)
    model = DeepLabV3(3, decoder=True, **TINY)
    randomize_batchnorm(model)
    return model


def test_the_classifier_reads_stride_4_features(model):
    assert model.name == "deeplabv3plus_mobilenetv2_os16"
    assert model(images(1, SIZE, SIZE)).shape == (1, SIZE, SIZE, 3)
    for decoder, cells in ((True, 17), (False, 5)):
        fixed = DeepLabV3(3, decoder=decoder, input_shape=(SIZE, SIZE, 3), **TINY)
        assert fixed.get_layer("classifier").output.shape[1:] == (cells, cells, 3)


def test_the_decoder_follows_the_paper():
    """48 projected low-level channels join the upsampled ASPP features; two separable 3×3
    convolutions (depthwise + pointwise, each with BN + ReLU) follow."""
    features, low = keras.Input((5, 5, 16)), keras.Input((17, 17, 24))
    decoded = deeplabv3plus_decoder(features, low, filters=32)
    model = keras.Model([features, low], decoded)
    assert decoded.shape[1:] == (17, 17, 32)
    assert model.get_layer("decoder_concat").output.shape[-1] == 16 + 48
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("DepthwiseConv2D") == 2 and kinds.count("ReLU") == 5
    assert model.get_layer("decoder_conv1_depthwise").kernel.shape == (3, 3, 64, 1)
    with pytest.raises(ValueError, match="low_filters=0"):
        deeplabv3plus_decoder(features, low, low_filters=0)


def test_the_logits_follow_the_stride_4_features(model):
    """The projected stride-4 map reaches the logits: scaling only its weights changes them."""
    x = images(1, SIZE, SIZE)
    before = model.predict(x, verbose=0)
    layer = model.get_layer("decoder_low")
    kernel = layer.kernel.numpy()
    try:
        layer.kernel.assign(kernel * 3.0)
        after = model.predict(x, verbose=0)
    finally:
        layer.kernel.assign(kernel)
    assert relative_error(after, before) > 1e-2


@pytest.mark.slow
def test_exports_and_bridges_as_builtins(model, tmp_path):
    x = images(2, SIZE, SIZE)
    ops = assert_litert_matches(model, x)
    assert {"DEPTHWISE_CONV_2D", "CONCATENATION", "RESIZE_BILINEAR"} <= set(ops)
    assert_save_load_equal(model, x, tmp_path)
    bridged = to_tf_keras(model, (SIZE, SIZE))
    np.testing.assert_allclose(bridged(x).numpy(), model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_pointrend_subdivides_twice_from_stride_4_and_trains():
    keras.utils.set_random_seed(6)
    model = DeepLabV3(3, decoder=True, pointrend=True, **TINY)
    assert model.get_layer("pointrend").steps == 2  # stride 4 → 2 → 1
    model.compile(keras.optimizers.SGD(0.01), SegmentationLoss(3))
    labels = np.random.default_rng(0).integers(0, 3, (2, SIZE, SIZE)).astype("int32")
    outputs = model(images(2, SIZE, SIZE), training=True)
    assert outputs["point_logits"].shape == (2, 17 * 17, 3)  # one point per coarse cell
    history = model.fit(images(2, SIZE, SIZE), labels, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.predict(images(1, SIZE, SIZE), verbose=0).shape == (1, SIZE, SIZE, 3)
