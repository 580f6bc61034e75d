"""Conversion of Keras 3 models to TFLite flatbuffers restricted to builtin ops."""

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def convert_to_tflite(model, input_shape):
    """Converts `model` to an fp32 TFLite flatbuffer.

    The inference function is frozen (variables become constants) before conversion; converted
    straight from a Keras 3 model, the variables stay as VAR_HANDLE / READ_VARIABLE ops and batch
    normalisation is not folded into the convolutions. Only builtin ops are allowed: a graph that
    would need Flex (TF Select) ops fails to convert instead of producing a file phones cannot run.

    Args:
        model: a Keras 3 model with one image input.
        input_shape: the input shape (B, H, W, C) of the converted model; None marks a dynamic
            dimension. Static sizes let the converter fold shape arithmetic into constants.

    Returns:
        The flatbuffer as bytes.
    """
    spec = tf.TensorSpec(tuple(input_shape), tf.float32, name="image")
    function = tf.function(lambda image: model(image, training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(spec))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()
