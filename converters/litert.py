"""Running and inspecting TFLite flatbuffers with the LiteRT interpreter."""

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


class LiteRTModel:
    """A TFLite model loaded in LiteRT's interpreter.

    Args:
        model: the flatbuffer as bytes, or the path of a `.tflite` file.
        num_threads: interpreter threads.
    """

    def __init__(self, model, num_threads=None):
        self._source = (
            {"model_content": bytes(model)}
            if isinstance(model, bytes | bytearray)
            else {"model_path": str(model)}
        )
        self.interpreter = Interpreter(**self._source, num_threads=num_threads)
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        # Tensors are allocated at the first call, for its input shape: a dynamic H or W holds a
        # placeholder 1 until then, which networks with unpadded convolutions cannot run.
        self._allocated_shape = None

    @property
    def op_names(self):
        """The op names of every node of the model, in execution order.

        Read from an interpreter without default delegates: once XNNPACK is applied, the nodes it
        takes show up as DELEGATE instead of their own names.
        """
        plain = Interpreter(
            **self._source,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        return [op["op_name"] for op in plain._get_ops_details()]

    @property
    def input_shape(self):
        """The input shape; -1 marks a dynamic dimension."""
        return tuple(int(d) for d in self.input_details[0]["shape_signature"])

    def __call__(self, inputs):
        """Runs one batch through the model's single input; dynamic dimensions are resized.

        Integer inputs are quantized from the float values given, with the input's scale and
        zero point; quantized outputs are returned dequantized (float32). Outputs without
        quantization parameters, such as uint8 class ids, are returned as they are.
        """
        detail = self.input_details[0]
        inputs = _quantize(np.asarray(inputs, dtype="float32"), detail)
        if self._allocated_shape != inputs.shape:
            if tuple(detail["shape"]) != inputs.shape:
                self.interpreter.resize_tensor_input(detail["index"], inputs.shape, strict=True)
            self.interpreter.allocate_tensors()
            self._allocated_shape = inputs.shape
            self.input_details = self.interpreter.get_input_details()
            self.output_details = self.interpreter.get_output_details()
            detail = self.input_details[0]
        self.interpreter.set_tensor(detail["index"], inputs)
        self.interpreter.invoke()
        output = self.output_details[0]
        return _dequantize(self.interpreter.get_tensor(output["index"]), output)


def _quantize(values, detail):
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(detail["dtype"], np.integer) or scale == 0:
        return values.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    quantized = np.round(values / scale) + zero_point
    return np.clip(quantized, info.min, info.max).astype(detail["dtype"])


def _dequantize(values, detail):
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(values.dtype, np.integer) or scale == 0:
        return values
    return ((values.astype("float32") - zero_point) * scale).astype("float32")
