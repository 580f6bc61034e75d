"""The capability check that picks native dilated kernels in training, and both its paths."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdeeplab.layers import AtrousConv2D, AtrousDepthwiseConv2D, AtrousSeparableConv2D
from tfdeeplab.layers.dilation_support import (
    OPS,
    agrees,
    native_conv,
    native_dilation_supported,
    space_to_batch_conv,
)


def _dilated(op, x, k):
    return space_to_batch_conv(op, x, k, (2, 2))


@pytest.mark.parametrize("op", OPS)
def test_the_check_refuses_a_kernel_that_ignores_dilation_or_raises(op):
    """What oneDNN's depthwise gradient does (undilated results) and what Eigen does (raise)
    must both read as unsupported; the formulation itself agrees with itself."""

    def undilated(o, x, k):
        return native_conv(o, x, k, (1, 1))

    def raising(o, x, k):
        raise tf.errors.UnimplementedError(None, None, "does not support dilations")

    assert agrees(_dilated, _dilated, op, tf.float32)
    assert not agrees(undilated, _dilated, op, tf.float32)
    assert not agrees(raising, _dilated, op, tf.float32)
    with pytest.raises(ValueError, match="op='conv3d' must be one of"):
        native_dilation_supported("conv3d")


def _pairs():
    """Each atrous layer and the Keras layer it must train like, dilation 2."""
    return [
        (AtrousConv2D(4, 3, padding="same", dilation_rate=2), keras.layers.Conv2D),
        (AtrousDepthwiseConv2D(3, padding="same", dilation_rate=2), keras.layers.DepthwiseConv2D),
        (
            AtrousSeparableConv2D(4, 3, padding="same", dilation_rate=2),
            keras.layers.SeparableConv2D,
        ),
    ]


@pytest.mark.parametrize("index", range(3))
def test_training_values_and_gradients_are_keras_whatever_the_check_chose(index):
    """In training each layer takes the native op where the check passed in this process
    (here oneDNN is on: Conv2D yes, depthwise no on TF 2.21) and Keras' formulation
    elsewhere; either way the values and gradients are Keras' own."""
    ours, keras_class = _pairs()[index]
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 13, 11, 3)), tf.float32)
    ours.build(x.shape)
    reference = keras_class.from_config(ours.get_config())
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())

    @tf.function
    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        return [y, *tape.gradient(loss, [x, *layer.trainable_variables])]

    for got, expected in zip(step(ours), step(reference), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


_WITHOUT_ONEDNN = """
import json, numpy as np, keras
from tfdeeplab.layers import AtrousConv2D, AtrousDepthwiseConv2D
from tfdeeplab.layers.dilation_support import native_dilation_supported
inputs = keras.Input((16, 16, 3))
x = AtrousConv2D(4, 3, padding="same", dilation_rate=2)(inputs)
x = AtrousDepthwiseConv2D(3, padding="same", dilation_rate=2)(x)
model = keras.Model(inputs, x)
model.compile("sgd", "mse")
loss = model.train_on_batch(np.ones((2, 16, 16, 3)), np.zeros((2, 16, 16, 4)))
print(json.dumps({op: native_dilation_supported(op) for op in ("conv2d", "depthwise")}
                 | {"loss": float(loss)}))
"""


def test_without_onednn_nothing_is_native_and_training_still_runs():
    """TensorFlow's Eigen CPU kernels (oneDNN off) raise on dilated Conv2D gradients and on
    any dilated depthwise op: the check says so and training takes Keras' formulation."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_ONEDNN], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["conv2d"] is False and result["depthwise"] is False
    assert np.isfinite(result["loss"])
