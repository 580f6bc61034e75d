"""FusedBatchNormalization computes what Keras' BatchNormalization computes, in training too."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdeeplab import DeepLabV3
from tfdeeplab.layers import FusedBatchNormalization


def _pair(shape, **config):
    plain = keras.layers.BatchNormalization(**config)
    fused = FusedBatchNormalization(**config)
    plain.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(1.0, 0.2, w.shape).astype("float32") for w in plain.get_weights()]
    weights[-1] = np.abs(weights[-1])  # a moving variance is positive
    plain.set_weights(weights)
    fused.set_weights(weights)
    return plain, fused


def _train_step(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * upstream)
    return y, tape.gradient(loss, [x, *layer.trainable_variables])


@pytest.mark.parametrize(
    "config",
    [{}, {"momentum": 0.9, "epsilon": 1e-5}, {"scale": False}, {"center": False}],
    ids=["defaults", "momentum", "no-scale", "no-center"],
)
def test_training_values_gradients_and_moving_statistics_equal_keras(config):
    shape = (2, 7, 5, 6)
    plain, fused = _pair(shape, **config)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(3.0, 2.0, shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    expected, expected_grads = _train_step(plain, x, upstream)
    got, got_grads = _train_step(fused, x, upstream)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    for g, e in zip(got_grads, expected_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    # Moving statistics: Keras keeps the biased batch variance; so must the fused path.
    for g, e in zip(fused.non_trainable_weights, plain.non_trainable_weights, strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)
    inference = fused(x, training=False).numpy()
    np.testing.assert_allclose(inference, plain(x, training=False), rtol=1e-5, atol=1e-5)


def test_the_training_graph_holds_the_fused_kernel_and_inference_keeps_keras_ops():
    _, fused = _pair((1, 4, 4, 3))
    spec = tf.TensorSpec((1, 4, 4, 3), tf.float32)
    ops = {
        training: {
            op.type
            for op in tf.function(lambda x, t=training: fused(x, training=t))
            .get_concrete_function(spec)
            .graph.get_operations()
        }
        for training in (True, False)
    }
    assert "FusedBatchNormV3" in ops[True]
    assert "FusedBatchNormV3" not in ops[False]


def test_options_the_fused_kernel_lacks_take_keras_path():
    x = tf.random.normal((2, 4, 4, 3))
    for layer, call in [
        (FusedBatchNormalization(synchronized=True), lambda layer: layer(x, training=True)),
        (FusedBatchNormalization(axis=1), lambda layer: layer(x, training=True)),
        (FusedBatchNormalization(), lambda layer: layer(tf.random.normal((2, 3)), training=True)),
    ]:
        spec_calls = tf.function(lambda layer=layer, call=call: call(layer))
        ops = {op.type for op in spec_calls.get_concrete_function().graph.get_operations()}
        assert "FusedBatchNormV3" not in ops


def test_models_use_it_and_round_trip(tmp_path):
    model = DeepLabV3(3, backbone="mobilenetv2", alpha=0.35, aspp_filters=8)
    kinds = {
        type(layer)
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert kinds == {FusedBatchNormalization}
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = np.random.default_rng(0).uniform(0, 255, (1, 33, 33, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
