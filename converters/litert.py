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

    def plain_interpreter(self):
        """A second interpreter of the same model without default delegates.

        Once XNNPACK is applied, the nodes it takes show up as DELEGATE instead of their own
        names, and the tensors inside its partitions keep placeholder shapes.
        """
        return Interpreter(
            **self._source,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )

    @property
    def op_names(self):
        """The op names of every node of the model, in execution order."""
        return [op["op_name"] for op in self.plain_interpreter()._get_ops_details()]

    @property
    def input_shape(self):
        """The input shape; -1 marks a dynamic dimension."""
        return tuple(int(d) for d in self.input_details[0]["shape_signature"])

    def delegation(self):
        """Which delegate runs the model, once tensors are allocated.

        Returns:
            {"delegate": "XNNPACK" or None, "partitions": delegated subgraphs, "nodes": nodes of
            the model}. One partition means XNNPACK runs the whole graph; every further one is
            a stretch of ops on TFLite's own kernels in between, and a hand-over.
        """
        if self._allocated_shape is None:
            raise RuntimeError("delegation() needs allocated tensors: call set_input() first")
        names = [op["op_name"] for op in self.interpreter._get_ops_details()]
        partitions = names.count("DELEGATE")
        return {
            "delegate": "XNNPACK" if partitions else None,
            "partitions": partitions,
            "nodes": len(names) - partitions,
        }

    def set_input(self, inputs):
        """Sets the model's single input; dynamic dimensions are resized, tensors allocated.

        Integer inputs are quantized from the float values given, with the input's scale and
        zero point.
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

    def output(self):
        """The first output of the last invocation; quantized outputs dequantized (float32).

        Outputs without quantization parameters, such as uint8 class ids, come as they are.
        """
        detail = self.output_details[0]
        return _dequantize(self.interpreter.get_tensor(detail["index"]), detail)

    def __call__(self, inputs):
        """Runs one batch through the model (`set_input`, invoke, `output`)."""
        self.set_input(inputs)
        self.interpreter.invoke()
        return self.output()


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
