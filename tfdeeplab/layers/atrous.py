"""Atrous (dilated) convolutions that convert to one dilated TFLite kernel.

Keras' own convolutions lower `dilation_rate > 1` through `tf.nn.convolution`, which wraps the
kernel in SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND. The TFLite converter keeps that wrapping, and
XNNPACK and the GPU delegate run it poorly (keras-team/keras#17450, tensorflow/tensorflow#53025).
These layers call the Conv2D / DepthwiseConv2dNative ops with their `dilations` attribute instead,
which convert to a single CONV_2D / DEPTHWISE_CONV_2D with dilation factors.

They subclass the Keras layers, so arguments, `get_config` and weight shapes are identical and
keras.applications weights load into them unchanged.
"""

import keras
import tensorflow as tf


def _nhwc(pair):
    return [1, int(pair[0]), int(pair[1]), 1]


def _depthwise_conv(inputs, kernel, strides, padding, dilation_rate):
    """Depthwise convolution as one DepthwiseConv2dNative op with `dilations`.

    The CPU gradient kernels of DepthwiseConv2dNative ignore `dilations` (measured: wrong input
    and filter gradients with TF 2.21), so the gradient is taken from `tf.nn.depthwise_conv2d`,
    whose space-to-batch formulation differentiates correctly. The forward graph, which is what
    gets exported, keeps the single native op.
    """
    strides, dilations = _nhwc(strides), _nhwc(dilation_rate)
    padding = padding.upper()

    @tf.custom_gradient
    def op(x, k):
        y = tf.raw_ops.DepthwiseConv2dNative(
            input=x, filter=k, strides=strides, padding=padding, dilations=dilations
        )

        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                reference = tf.nn.depthwise_conv2d(x, k, strides, padding, dilations=dilation_rate)
            return tape.gradient(reference, [x, k], output_gradients=dy)

        return y, grad

    if max(dilation_rate) == 1:
        return tf.nn.depthwise_conv2d(inputs, kernel, strides, padding)
    return op(inputs, kernel)


def _add_bias_and_activate(layer, outputs):
    if layer.use_bias:
        outputs = tf.nn.bias_add(outputs, tf.cast(layer.bias, outputs.dtype))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def _dilated_depthwise(layer, inputs, kernel):
    return _depthwise_conv(
        inputs, tf.cast(kernel, inputs.dtype), layer.strides, layer.padding, layer.dilation_rate
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

    def convolution_op(self, inputs, kernel):
        return tf.nn.conv2d(
            inputs,
            tf.cast(kernel, inputs.dtype),
            strides=_nhwc(self.strides),
            padding=self.padding.upper(),
            dilations=_nhwc(self.dilation_rate),
        )


@keras.saving.register_keras_serializable(package="tfdeeplab")
class AtrousDepthwiseConv2D(_ChannelsLast, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` whose dilation exports as one dilated DEPTHWISE_CONV_2D."""

    def call(self, inputs):
        return _add_bias_and_activate(self, _dilated_depthwise(self, inputs, self.kernel))


@keras.saving.register_keras_serializable(package="tfdeeplab")
class AtrousSeparableConv2D(_ChannelsLast, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` exporting as dilated DEPTHWISE_CONV_2D + 1×1 CONV_2D."""

    def call(self, inputs):
        outputs = _dilated_depthwise(self, inputs, self.depthwise_kernel)
        outputs = tf.nn.conv2d(outputs, tf.cast(self.pointwise_kernel, outputs.dtype), 1, "VALID")
        return _add_bias_and_activate(self, outputs)
