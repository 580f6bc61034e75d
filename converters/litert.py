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
        self.interpreter.allocate_tensors()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()

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

    def __call__(self, inputs):
        """Runs one batch. `inputs` must match the model's single input shape and dtype."""
        detail = self.input_details[0]
        self.interpreter.set_tensor(detail["index"], np.asarray(inputs, dtype=detail["dtype"]))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_details[0]["index"])
