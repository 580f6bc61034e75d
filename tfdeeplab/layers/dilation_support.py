"""Which dilated convolutions this process's kernels compute natively, values and gradients.

TensorFlow's Conv2D and DepthwiseConv2dNative ops take a `dilations` attribute, but whether a
kernel honours it depends on the build and the CPU flags: with the Eigen CPU kernels, dilated
Conv2D runs forward but its gradients raise, and dilated DepthwiseConv2dNative does not run at
all; with oneDNN on (TF's default on AVX-512 VNNI / AMX CPUs, `TF_ENABLE_ONEDNN_OPTS=1`
elsewhere), both run forward, and Conv2D's gradients are right, but DepthwiseConv2dNative's
gradient kernels ignore `dilations` and silently return the undilated gradients (measured with
TF 2.21 on an AVX2 CPU: d/dfilter -16.2 where the finite difference and Keras' space-to-batch
formulation give -42.1; compare tensorflow/tensorflow#56498 for the forward op).

So the answer comes from running each op, not from CPU flags: `native_dilation_supported`
runs a small dilated convolution and its gradients, in a `tf.function` as training does, and
compares them with the space-to-batch formulation that every kernel computes. A raising kernel
and a wrong one both answer False. The answer is cached per op, device type and dtype.
"""

import concurrent.futures
import threading

import numpy as np
import tensorflow as tf

OPS = ("conv2d", "depthwise")
_CACHE = {}
_LOCK = threading.Lock()
# Probe sizes: a 9x9 map with two channels, 3x3 kernels, dilation 2 (SAME padding).
_SHAPES = {"x": (1, 9, 9, 2), "conv2d": (3, 3, 2, 2), "depthwise": (3, 3, 2, 1)}


def native_conv(op, x, kernel, dilation, strides=(1, 1), padding="SAME"):
    """One Conv2D / DepthwiseConv2dNative op with its `dilations` attribute."""
    strides, dilations = [1, *strides, 1], [1, *dilation, 1]
    if op == "conv2d":
        return tf.nn.conv2d(x, kernel, strides, padding, dilations=dilations)
    return tf.raw_ops.DepthwiseConv2dNative(
        input=x, filter=kernel, strides=strides, padding=padding, dilations=dilations
    )


def space_to_batch_conv(op, x, kernel, dilation, padding="SAME"):
    """The same convolution through space-to-batch, as Keras computes it (stride 1)."""
    if op == "conv2d":
        return tf.nn.convolution(x, kernel, padding=padding, dilations=list(dilation))
    return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], padding, dilations=tuple(dilation))


def agrees(native, reference, op, dtype, rtol=1e-3):
    """Whether `native(op, x, k)` gives `reference(op, x, k)`'s values and input and kernel
    gradients on the probe inputs (False where it raises)."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(_SHAPES["x"]), dtype)
    kernel = tf.constant(rng.standard_normal(_SHAPES[op]), dtype)

    @tf.function
    def values_and_gradients(convolve):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = convolve(op, x, kernel)
            loss = tf.reduce_sum(y * y)  # a non-uniform output gradient (2y)
        return [y, *tape.gradient(loss, [x, kernel])]

    try:
        got = values_and_gradients(native)
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        return False
    expected = values_and_gradients(reference)
    for a, b in zip(got, expected, strict=True):
        scale = max(float(tf.reduce_max(tf.abs(tf.cast(b, tf.float32)))), 1.0)
        if float(tf.reduce_max(tf.abs(tf.cast(a - b, tf.float32)))) > rtol * scale:
            return False
    return True


def native_dilation_supported(op, dtype="float32", device_type=None):
    """True where this process computes the dilated `op` ("conv2d" or "depthwise") natively
    with the values and gradients of the space-to-batch formulation, on `device_type` ("CPU",
    "GPU"; default: GPU if one is visible). Probed once per (op, device type, dtype)."""
    if op not in OPS:
        raise ValueError(f"op={op!r} must be one of {OPS}")
    dtype = tf.as_dtype(dtype)
    if device_type is None:
        device_type = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    key = (op, device_type, dtype.name)
    with _LOCK:
        if key not in _CACHE:
            # A thread of its own: the caller is usually a layer being traced inside a tape
            # and a distribution strategy, and both are per thread; `tf.init_scope` would
            # leave the graph but keep gradient recording paused.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                _CACHE[key] = pool.submit(_probe, op, dtype, device_type).result()
        return _CACHE[key]


def _probe(op, dtype, device_type):
    with tf.device(f"/{device_type}:0"):
        return agrees(
            lambda o, x, k: native_conv(o, x, k, (2, 2)),
            lambda o, x, k: space_to_batch_conv(o, x, k, (2, 2)),
            op,
            dtype,
        )
