"""Atrous (dilated) convolutions that convert to one dilated TFLite kernel.

Keras' own convolutions lower `dilation_rate > 1` through `tf.nn.convolution`, which wraps the
kernel in SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND. The TFLite converter keeps that wrapping for
dynamic input sizes, and XNNPACK and the GPU delegate run it poorly (keras-team/keras#17450,
tensorflow/tensorflow#53025). Inside `native_dilation()`, which the converters use while tracing,
these layers emit the Conv2D / DepthwiseConv2dNative ops with their `dilations` attribute
instead, which convert to a single CONV_2D / DEPTHWISE_CONV_2D with dilation factors.

Outside it, TensorFlow's kernels set the limits, and they differ by build and CPU (see
`tfdeeplab.layers.dilation_support`): the Eigen CPU kernels run dilated Conv2D forward but not
its gradients, and no dilated DepthwiseConv2dNative; the oneDNN ones run both and Conv2D's
gradients, but return wrong DepthwiseConv2dNative gradients. So in training each layer uses the
native op where `native_dilation_supported` found its values and gradients right in this
process, and Keras' space-to-batch formulation elsewhere. At inference `AtrousConv2D` runs one
dilated Conv2D (every kernel computes it forward) and the depthwise layers space-to-batch, so
a SavedModel traced on any machine serves on any other.

They subclass the Keras layers, so arguments, `get_config` and weight shapes are identical and
keras.applications weights load into them unchanged.
"""

import contextlib
import threading

import keras
import tensorflow as tf

from tfdeeplab.layers.dilation_support import native_conv, native_dilation_supported

_TRACING = threading.local()


@contextlib.contextmanager
def native_dilation():
    """Traces dilated convolutions of the layers below as single native ops, for export."""
    previous = getattr(_TRACING, "native", False)
    _TRACING.native = True
    try:
        yield
    finally:
        _TRACING.native = previous


def _nhwc(pair):
    return [1, int(pair[0]), int(pair[1]), 1]


def _native():
    return getattr(_TRACING, "native", False)


def _depthwise_conv(inputs, kernel, strides, padding, dilation_rate, training=False):
    padding = padding.upper()
    if max(dilation_rate) > 1 and (
        _native() or (training and native_dilation_supported("depthwise", inputs.dtype))
    ):
        return native_conv("depthwise", inputs, kernel, dilation_rate, strides, padding)
    return tf.nn.depthwise_conv2d(
        inputs, kernel, _nhwc(strides), padding, dilations=tuple(dilation_rate)
    )


def _add_bias_and_activate(layer, outputs):
    if layer.use_bias:
        outputs = tf.nn.bias_add(outputs, tf.cast(layer.bias, outputs.dtype))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def _dilated_depthwise(layer, inputs, kernel, training):
    kernel = tf.cast(kernel, inputs.dtype)
    return _depthwise_conv(
        inputs, kernel, layer.strides, layer.padding, layer.dilation_rate, bool(training)
    )


class _ChannelsLast:
    """Rejects channels_first at construction: TFLite is NHWC and so are these kernels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last":
            raise ValueError(
                f"{type(self).__name__} '{self.name}' supports data_format='channels_last' only "
                f"(TFLite is NHWC); got data_format={self.data_format!r}."
            )


@keras.saving.register_keras_serializable(package="tfdeeplab")
class AtrousConv2D(_ChannelsLast, keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose dilation exports as one dilated CONV_2D.

    Takes exactly the arguments of `keras.layers.Conv2D`
    (DeepLabV3, arXiv:1706.05587, section 3.1: atrous convolution).
    """

    def call(self, inputs, training=None):
        if max(self.dilation_rate) == 1:
            outputs = self.convolution_op(inputs, self.kernel)
        elif _native() or (training and native_dilation_supported("conv2d", inputs.dtype)):
            # Export, or a platform whose native gradients the check found right.
            outputs = self._native_conv(inputs, tf.cast(self.kernel, inputs.dtype))
        elif training:
            outputs = self.convolution_op(inputs, self.kernel)  # Keras' own (space-to-batch)
        else:
            outputs = self._dilated_conv(inputs, tf.cast(self.kernel, inputs.dtype))
        return _add_bias_and_activate(self, outputs)

    def _native_conv(self, x, kernel):
        padding = self.padding.upper()
        return native_conv("conv2d", x, kernel, self.dilation_rate, self.strides, padding)

    def _dilated_conv(self, inputs, kernel):
        """Inference: one Conv2D op with `dilations`; its gradient through Keras' formulation.

        TF's Eigen CPU kernel runs dilated Conv2D forward (not backward); at inference this is
        1.2× faster than space-to-batch for ResNet-50 OS8 at 513×513 on 2 cores (2.35 s vs
        2.85 s, measured). Gradients, rarely asked for outside training, are taken from the
        space-to-batch convolution, which every kernel differentiates.
        """

        @tf.custom_gradient
        def op(x, k):
            def grad(dy):
                with tf.GradientTape() as tape:
                    tape.watch([x, k])
                    reference = self.convolution_op(x, k)
                return tape.gradient(reference, [x, k], output_gradients=dy)

            return self._native_conv(x, k), grad

        return op(inputs, kernel)


@keras.saving.register_keras_serializable(package="tfdeeplab")
class AtrousDepthwiseConv2D(_ChannelsLast, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` whose dilation exports as one dilated DEPTHWISE_CONV_2D."""

    def call(self, inputs, training=None):
        outputs = _dilated_depthwise(self, inputs, self.kernel, training)
        return _add_bias_and_activate(self, outputs)


@keras.saving.register_keras_serializable(package="tfdeeplab")
class AtrousSeparableConv2D(_ChannelsLast, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` exporting as dilated DEPTHWISE_CONV_2D + 1×1 CONV_2D."""

    def call(self, inputs, training=None):
        outputs = _dilated_depthwise(self, inputs, self.depthwise_kernel, training)
        outputs = tf.nn.conv2d(outputs, tf.cast(self.pointwise_kernel, outputs.dtype), 1, "VALID")
        return _add_bias_and_activate(self, outputs)
