import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import assert_litert_matches, assert_same_config, images
from tfdeeplab.layers import (
    ASPP,
    AtrousConv2D,
    AtrousDepthwiseConv2D,
    AtrousSeparableConv2D,
    ImageNormalization,
    ResizeLike,
)
from tfdeeplab.layers.atrous import native_dilation
from tfdeeplab.layers.dilation_support import native_dilation_supported

PAIRS = [
    (keras.layers.Conv2D, AtrousConv2D, {"filters": 4, "kernel_size": 3}),
    (keras.layers.DepthwiseConv2D, AtrousDepthwiseConv2D, {"kernel_size": 3}),
    (keras.layers.SeparableConv2D, AtrousSeparableConv2D, {"filters": 4, "kernel_size": 3}),
]


@pytest.mark.parametrize("reference_cls, atrous_cls, kwargs", PAIRS)
@pytest.mark.parametrize("rate, padding", [(2, "same"), (3, "valid"), (1, "same")])
def test_atrous_layers_match_keras_values_and_gradients(
    reference_cls, atrous_cls, kwargs, rate, padding
):
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 13, 11, 6)), tf.float32)
    config = {**kwargs, "dilation_rate": rate, "padding": padding, "use_bias": True}
    reference, atrous = reference_cls(**config), atrous_cls(**config)
    reference.build(x.shape)
    atrous.build(x.shape)
    atrous.set_weights([w + 0.1 for w in reference.get_weights()])
    reference.set_weights(atrous.get_weights())

    def value_and_grads(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, [x, *layer.trainable_weights])

    y_ref, g_ref = value_and_grads(reference)
    y, g = value_and_grads(atrous)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, expected in zip(g, g_ref, strict=True):
        scale = float(tf.reduce_max(tf.abs(expected)))
        np.testing.assert_allclose(got, expected, atol=1e-5 * max(scale, 1))


@pytest.mark.parametrize("reference_cls, atrous_cls, kwargs", PAIRS)
def test_atrous_layers_keep_keras_config_and_weight_shapes(reference_cls, atrous_cls, kwargs):
    reference = reference_cls(**kwargs, dilation_rate=2)
    atrous = atrous_cls.from_config(reference.get_config())
    reference.build((None, None, None, 6))
    atrous.build((None, None, None, 6))
    assert [w.shape for w in atrous.weights] == [w.shape for w in reference.weights]
    assert_same_config(atrous.get_config(), reference.get_config())


def test_atrous_layers_reject_channels_first():
    with pytest.raises(ValueError, match="channels_last"):
        AtrousConv2D(4, 3, dilation_rate=2, data_format="channels_first")


def test_dilated_convolutions_convert_to_single_dilated_kernels():
    inputs = keras.Input((None, None, 8))
    x = AtrousConv2D(8, 3, padding="same", dilation_rate=2)(inputs)
    x = AtrousDepthwiseConv2D(3, padding="same", dilation_rate=4)(x)
    x = AtrousSeparableConv2D(8, 3, padding="same", dilation_rate=3)(x)
    ops = assert_litert_matches(keras.Model(inputs, x), images(1, 32, 32)[..., :1].repeat(8, -1))
    assert sorted(set(ops)) == ["CONV_2D", "DEPTHWISE_CONV_2D"]


def test_native_dilated_ops_appear_where_checked_or_portable_or_exported():
    """Training graphs hold the native dilated ops the capability check passed in this process
    (`tests/test_dilation_support.py` checks both paths' values); inference graphs only the
    dilated Conv2D forward, which every CPU kernel set has, so SavedModels serve anywhere; the
    export trace both."""
    inputs = keras.Input((None, None, 8))
    x = AtrousConv2D(8, 3, padding="same", dilation_rate=2)(inputs)
    x = AtrousDepthwiseConv2D(3, padding="same", dilation_rate=4)(x)
    model = keras.Model(inputs, x)
    spec = tf.TensorSpec((1, 16, 16, 8))

    def dilated_ops(training):
        forward = tf.function(lambda images: model(images, training=training))
        graph = forward.get_concrete_function(spec).graph
        return sorted(
            op.type
            for op in graph.get_operations()
            if op.type in ("Conv2D", "DepthwiseConv2dNative") and max(op.get_attr("dilations")) > 1
        )

    checked = [("Conv2D", "conv2d"), ("DepthwiseConv2dNative", "depthwise")]
    native = [name for name, op in checked if native_dilation_supported(op)]
    assert dilated_ops(training=True) == native
    assert dilated_ops(training=False) == ["Conv2D"]
    with native_dilation():
        assert dilated_ops(training=False) == ["Conv2D", "DepthwiseConv2dNative"]


def test_keras_dilated_conv_is_what_the_parity_check_catches():
    """Control: with dynamic H and W, Keras' own dilated Conv2D keeps space-to-batch, and the
    check says so."""
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2)(inputs)
    with pytest.raises(AssertionError, match="space-to-batch"):
        assert_litert_matches(keras.Model(inputs, outputs), images(1, 32, 32))


@pytest.mark.parametrize(
    "mode, preprocess",
    [
        ("caffe", keras.applications.resnet.preprocess_input),
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
    ],
)
def test_image_normalization_matches_keras_applications(mode, preprocess):
    x = images(2, 8, 8)
    np.testing.assert_allclose(
        ImageNormalization(mode)(x), preprocess(x.copy()), rtol=1e-5, atol=1e-4
    )


def test_caffe_normalization_converts_to_one_delegated_partition(tmp_path):
    """The RGB → BGR flip is a 1×1 permutation convolution, exact, and int8 / float16 files
    run whole in XNNPACK (a REVERSE_V2 split them in two partitions)."""
    from converters import LiteRTModel, export_tflite

    inputs = keras.Input((32, 32, 3))
    normalized = ImageNormalization("caffe")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same")(normalized))
    x = images(1, 32, 32)
    np.testing.assert_array_equal(
        ImageNormalization("caffe")(x), keras.applications.resnet.preprocess_input(x.copy())
    )
    for mode in ("float16", "int8"):
        path = export_tflite(model, tmp_path / f"{mode}.tflite", mode, 32, [x], 1)
        litert = LiteRTModel(path)
        litert(x)
        assert "REVERSE_V2" not in litert.op_names
        assert litert.delegation()["partitions"] == 1, (mode, litert.op_names)


def test_image_normalization_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode='bgr' is unknown; choose one of: caffe, tf, torch"):
        ImageNormalization("bgr")


def test_resize_like_matches_tf_image_resize_for_dynamic_sizes():
    x = np.arange(2 * 3 * 4 * 2, dtype="float32").reshape(2, 3, 4, 2)
    reference = np.zeros((2, 7, 9, 1), "float32")
    expected = tf.image.resize(x, (7, 9), method="bilinear")
    np.testing.assert_allclose(ResizeLike("bilinear")([x, reference]), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="interpolation='cubic' is unknown"):
        ResizeLike("cubic")


def test_aspp_shapes_weights_and_config():
    aspp = ASPP(filters=8, rates=(1, 2, 3), dropout=0.2)
    features = np.random.default_rng(0).normal(size=(2, 9, 7, 16)).astype("float32")
    assert aspp(features).shape == (2, 9, 7, 8)
    per_branch_bn = 2 * 8
    expected = (
        16 * 8
        + per_branch_bn  # 1×1 branch
        + 3 * (9 * 16 * 8 + per_branch_bn)  # three 3×3 atrous branches
        + 16 * 8
        + per_branch_bn  # image-level branch
        + 5 * 8 * 8
        + per_branch_bn  # projection of the 5 concatenated branches
    )
    assert sum(int(np.prod(w.shape)) for w in aspp.trainable_weights) == expected
    assert_same_config(ASPP.from_config(aspp.get_config()).get_config(), aspp.get_config())


def test_aspp_image_pooling_branch_is_global():
    """The image-level branch makes every position depend on the whole map (rates do not)."""
    aspp = ASPP(filters=4, rates=(1,), dropout=0.0)
    a = np.zeros((1, 9, 9, 3), "float32")
    b = a.copy()
    b[0, 8, 8] = 10.0  # far outside the 3×3 rate-1 receptive field of position (0, 0)
    assert not np.allclose(aspp(a)[0, 0, 0], aspp(b)[0, 0, 0])


@pytest.mark.parametrize("rates", [(), (2, 4)])
@pytest.mark.parametrize("training", [False, True])
def test_aspp_projects_the_image_level_features_by_parts_with_the_same_values(rates, training):
    """The projection of [branches, pooled features broadcast to H × W] equals the projection
    of the branches plus the projected 1×1 pooled map (the projection is linear); at inference
    the projection's BN (here with trained-like statistics) is folded into it."""
    layer = ASPP(8, rates, dropout=0.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 11, 5)).astype("float32")
    layer.build(x.shape)
    gamma, beta, mean, variance = (rng.uniform(0.2, 3, 8).astype("float32") for _ in range(4))
    layer.projection[1].set_weights([gamma, beta - 1.5, mean - 1.5, variance])
    actual = layer(x, training=training).numpy()
    branches = [layer._run(branch, x, training) for branch in layer.branches]
    pooled = layer._run(layer.pool_branch, layer.pooling(x), training)
    broadcast = pooled * keras.ops.ones_like(branches[0][..., :1])
    concatenated = keras.ops.concatenate([*branches, broadcast], axis=-1)
    expected = layer._run(layer.projection, concatenated, training).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5)
