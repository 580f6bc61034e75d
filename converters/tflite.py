"""TFLite export of tfdeeplab models, restricted to builtin ops, in every quantization mode."""

import warnings

import keras
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from converters.calibration import representative_images
from converters.folding import fold_input_normalization
from converters.options import IOType, Output, Quantization
from tfdeeplab.atomic import atomic_write_bytes, refuse_overwrite
from tfdeeplab.layers.atrous import native_dilation

_TF_IO_TYPES = {IOType.UINT8: tf.uint8, IOType.INT8: tf.int8}


DYNAMIC = "dynamic"  # export_tflite's input_size for a file with dynamic H and W


def _inference_function(model, output, byte_input=False):
    """model(image) as a tf.function, with the argmax in the graph for `Output.MASK`.

    With `byte_input`, the image first passes a FakeQuant over [0, 255] with 256 levels: the
    converter takes the input tensor's quantization from it, scale 1 and zero point 0 for uint8
    (-128 for int8), instead of from the calibration images' min and max, which would make the
    integer input raw RGB bytes only when calibration happened to span exactly 0..255.
    """

    def logits_of(image):
        if byte_input:
            image = tf.quantization.fake_quant_with_min_max_args(image, 0.0, 255.0, num_bits=8)
        # A feature extractor (e.g. `get_backbone`) returns a dict of maps: each is an output.
        outputs = model(image, training=False)
        return tf.nest.map_structure(lambda tensor: tf.cast(tensor, tf.float32), outputs)

    if output is Output.LOGITS:
        return tf.function(logits_of)
    # ARG_MAX gives int32; uint8 ids are what phones draw from and a quarter of the bytes.
    return tf.function(
        lambda image: tf.cast(tf.argmax(logits_of(image), -1, output_type=tf.int32), tf.uint8)
    )


def convert_to_tflite(
    model,
    input_shape,
    quantization=Quantization.NONE,
    representative_data=None,
    calibration_steps=100,
    output=Output.LOGITS,
    io_type=IOType.FLOAT32,
):
    """Converts `model` to a TFLite flatbuffer with builtin ops only (see `tflite_converter`
    for the arguments); returns the flatbuffer as bytes.

    An int8 file with float logits out upsamples its logits in float: see `_float_upsampling`.
    """
    converter = tflite_converter(
        model, input_shape, quantization, representative_data, calibration_steps, output, io_type
    )
    if (
        Quantization.parse(quantization, "quantization") is Quantization.INT8
        and IOType.parse(io_type, "io_type") is IOType.FLOAT32
        and Output.parse(output, "output") is Output.LOGITS
    ):
        return _float_upsampling(converter, representative_data, tuple(input_shape[1:3]))
    return converter.convert()


# Ops between the logits' upsampling and the output of a tfdeeplab model (the crop of a
# padded input).
_TRAILING_OPS = {"SLICE", "STRIDED_SLICE", "RESHAPE"}


def _float_upsampling(converter, representative_data, size):
    """The int8 flatbuffer of `converter` with the final RESIZE_BILINEAR of the logits (and
    the crop after it) left in float: DEQUANTIZE of the coarse logits, then a float resize,
    instead of an int8 resize to the full image and a DEQUANTIZE of every output value. At
    257² (21 classes, MobileNetV2 α 0.5) that is 0.2 ms less of 2.1 ms on 2 threads
    (XNNPACK), and the logits are no longer rounded to 256 levels after the upsampling.

    The selective quantization is TensorFlow's: `QuantizationDebugger` with
    `denylisted_nodes` (the nodes named by their output tensors). A model that does not end
    in a resize converts as usual.
    """
    from converters.litert import LiteRTModel

    with warnings.catch_warnings():  # the debugger's own tf.lite.Interpreter, not ours
        warnings.filterwarnings("ignore", "\\s*Warning: tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: representative_images(representative_data, size, 1),
        )
        names = _upsampling_nodes(LiteRTModel(debugger.calibrated_model).plain_interpreter())
        if names:
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=names)
    return debugger.get_nondebug_quantized_model()


def _upsampling_nodes(interpreter):
    """Output tensor names of the final RESIZE_BILINEAR and the `_TRAILING_OPS` after it; []
    if the graph does not end that way."""
    producers = {out: op for op in interpreter._get_ops_details() for out in op["outputs"]}
    op = producers.get(interpreter.get_output_details()[0]["index"])
    names = []
    while op is not None and op["op_name"] in _TRAILING_OPS | {"RESIZE_BILINEAR"}:
        names.append(interpreter._get_tensor_details(op["outputs"][0], 0)["name"])
        if op["op_name"] == "RESIZE_BILINEAR":
            return names
        op = producers.get(op["inputs"][0])
    return []


def tflite_converter(
    model,
    input_shape,
    quantization=Quantization.NONE,
    representative_data=None,
    calibration_steps=100,
    output=Output.LOGITS,
    io_type=IOType.FLOAT32,
):
    """The `tf.lite.TFLiteConverter` that `convert_to_tflite` runs: builtin ops only, set up
    for `quantization` (also what `tf.lite.experimental.QuantizationDebugger` takes).

    The inference function is frozen (variables become constants) before conversion; converted
    straight from a Keras 3 model, the variables stay as VAR_HANDLE / READ_VARIABLE ops and batch
    normalisation is not folded into the convolutions. Only builtin ops are allowed: a graph that
    would need Flex (TF Select) ops fails to convert instead of producing a file phones cannot run.

    Args:
        model: a Keras 3 model with one image input, or a quantization-aware tf_keras model from
            `converters.qat` (then `quantization` must be "qat").
        input_shape: the input shape (B, H, W, C) of the converted model; None marks a dynamic
            dimension. Static sizes let the converter fold shape arithmetic into constants and
            keep resizes delegable.
        quantization: a `Quantization` or its value; "qat" here converts an already
            quantization-aware model (`export_tflite` runs the fine-tuning).
        representative_data: images for calibration (see `representative_images`); needed by
            "int8", optional for "qat" (ranges of layers without fake-quant, e.g. PointRend).
        calibration_steps: images drawn from `representative_data`.
        output: an `Output`: "logits" or "mask".
        io_type: an `IOType`; integer input (and logits output) for "int8"/"qat". An integer
            input is the image's bytes: uint8 with scale 1 and zero point 0 (camera bytes as
            they are), int8 with scale 1 and zero point -128 (bytes minus 128).

    Returns:
        The configured converter.
    """
    quantization = Quantization.parse(quantization, "quantization")
    output = Output.parse(output, "output")
    io_type = IOType.parse(io_type, "io_type")
    if io_type is not IOType.FLOAT32 and not quantization.integer:
        raise ValueError(
            f"io_type={io_type.value!r} needs an integer model; quantization="
            f"{quantization.value!r} keeps float inputs (use 'int8' or 'qat')"
        )
    if quantization is Quantization.INT8 and representative_data is None:
        raise ValueError(
            "quantization='int8' calibrates activation ranges on images: pass "
            "representative_data (e.g. converters.calibration_dataset(folder, input_size))"
        )
    if isinstance(model, keras.Model):  # not a tf_keras QAT model: its layers are fixed
        model, _ = fold_input_normalization(model, tuple(input_shape[1:3]))
    spec = tf.TensorSpec(tuple(input_shape), tf.float32, name="image")
    byte_input = io_type is not IOType.FLOAT32
    with native_dilation():
        concrete = _inference_function(model, output, byte_input).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(concrete)]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not Quantization.NONE:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization is Quantization.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if quantization.integer:
        if representative_data is not None:
            size = tuple(input_shape[1:3])
            converter.representative_dataset = lambda: representative_images(
                representative_data, size, calibration_steps
            )
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            # Ops without an int8 kernel (PointRend's TOPK_V2 on floats, GATHER_ND on scores)
            # stay float builtins rather than failing the conversion.
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        if io_type is not IOType.FLOAT32:
            converter.inference_input_type = _TF_IO_TYPES[io_type]
            if output is Output.LOGITS:
                converter.inference_output_type = _TF_IO_TYPES[io_type]
    return converter


def export_tflite(
    model,
    path,
    quantization=Quantization.NONE,
    input_size=(513, 513),
    representative_data=None,
    calibration_steps=100,
    output=Output.LOGITS,
    io_type=IOType.FLOAT32,
    qat=None,
    overwrite=False,
    metadata=None,
):
    """Writes `model` as a `.tflite` file for phones, atomically, with its metadata embedded
    (`converters.metadata`: read it back with `converters.read_metadata(path)`).

    Args:
        model: a trained tfdeeplab Keras 3 model (or a QAT model from
            `converters.quantization_aware_training` with quantization="qat").
        path: the `.tflite` file to write.
        quantization: "none" (fp32), "float16", "dynamic", "int8" or "qat" (`Quantization`).
        input_size: (H, W) of the exported input (batch 1, static: delegates want static
            sizes), or "dynamic": H and W unknown, for servers (the interpreter's
            `resize_tensor_input` sets them; int8 calibrates on the images at their own sizes).
        representative_data: for "int8", images or (images, masks) batches from the real input
            pipeline (`converters.calibration_dataset`); for "qat", the (images, masks)
            batches to fine-tune on, at `input_size`.
        calibration_steps: calibration images.
        output: "logits" (float32 (1, H, W, K)) or "mask" (uint8 (1, H, W) class ids).
        io_type: "float32", "uint8" or "int8" input (and logits) for "int8"/"qat".
        qat: a `converters.QATOptions` for "qat" (epochs, steps, learning rate).
        overwrite: replace an existing file.
        metadata: `converters.metadata.describe(model, class_names, colours, ...)`; default:
            the model's own facts with generic class names and the palette's colours. The
            input and output tensors, output kind and quantization are added here.

    Returns:
        The path written.
    """
    from converters.metadata import describe

    quantization = Quantization.parse(quantization, "quantization")
    metadata = describe(model) if metadata is None else metadata
    refuse_overwrite(path, overwrite)
    height, width = _size_pair(input_size)
    if quantization is Quantization.QAT and height is None:
        raise ValueError("quantization='qat' fine-tunes at a static input_size, not 'dynamic'")
    if quantization is Quantization.QAT and isinstance(model, keras.Model):
        from converters.qat import QATOptions, quantization_aware_training

        if representative_data is None:
            raise ValueError(
                "quantization='qat' fine-tunes on labelled data: pass representative_data as "
                "(images, masks) batches at input_size (e.g. converters.calibration_dataset("
                "folder, input_size, split='train'), which yields both)"
            )
        model = quantization_aware_training(
            model, representative_data, (height, width), qat or QATOptions()
        )
    flatbuffer = convert_to_tflite(
        model,
        (1, height, width, model.input_shape[-1]),
        quantization,
        representative_data,
        calibration_steps,
        output,
        io_type,
    )
    flatbuffer = _with_metadata(flatbuffer, metadata, Output.parse(output, "output"), quantization)
    return atomic_write_bytes(path, flatbuffer)


def _with_metadata(flatbuffer, description, output, quantization):
    from converters.litert import LiteRTModel
    from converters.metadata import embed_in_tflite, tensor_description, with_tensors

    model = LiteRTModel(flatbuffer)
    tensors = []
    for detail in (model.input_details[0], model.output_details[0]):
        dtype = detail["dtype"].__name__
        tensors.append(tensor_description(detail["shape_signature"], dtype, detail["quantization"]))
    described = with_tensors(description, *tensors, output.value, quantization.value)
    return embed_in_tflite(flatbuffer, described)


def _size_pair(input_size):
    """(H, W) ints, or (None, None) for `DYNAMIC`."""
    if input_size == DYNAMIC:
        return None, None
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
        raise ValueError(
            f"input_size={input_size!r} must be an int, (height, width) ≥ 1 or {DYNAMIC!r}"
        )
    return int(size[0]), int(size[1])
