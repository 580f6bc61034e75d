"""Multiply-accumulate (MAC) counts of TF graphs and TFLite models at a fixed input size.

Only the ops that carry the arithmetic of a segmentation network are counted: convolutions,
depthwise convolutions and matrix products. Element-wise ops, resizes and batch norm (folded into
convolutions at export) are left out, as in the papers and in TFLite's converter estimate. One
MAC is two FLOPs.
"""

import numpy as np


def _product(shape):
    return int(np.prod([int(d) for d in shape], dtype=np.int64))


def graph_macs(concrete_function):
    """MACs of a concrete function traced at a fully static input shape.

    The function is frozen first, which inlines nested calls (e.g. a SavedModel signature called
    from a wrapper), so every convolution shows up with static shapes; ops no output depends on
    are not counted.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete_function)
    total = 0
    for op in _reachable_ops(frozen.outputs):
        if op.type not in ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2"):
            continue
        output, weights = op.outputs[0].shape, op.inputs[1].shape
        consumers = op.outputs[0].consumers()
        if len(consumers) == 1 and consumers[0].type == "BatchToSpaceND":
            # Dilation lowered through space-to-batch: the batches are padded to multiples of
            # the rate; the nominal count is that of the unpadded map.
            output = consumers[0].outputs[0].shape
        if not output.is_fully_defined():
            raise ValueError(f"{op.name} ({op.type}) has no static shape: {output}")
        if op.type == "Conv2D":
            per_output = _product(weights[:3])  # kh × kw × input channels
        elif op.type == "DepthwiseConv2dNative":
            per_output = _product(weights[:2])
        else:
            transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
            per_output = int(op.inputs[0].shape[-2 if transposed else -1])
        total += _product(output) * per_output
    return total


def _reachable_ops(outputs):
    """The ops the outputs depend on; a frozen graph keeps dead branches the converter prunes."""
    pending, seen = [tensor.op for tensor in outputs], {}
    while pending:
        op = pending.pop()
        if op.name not in seen:
            seen[op.name] = op
            pending.extend(tensor.op for tensor in op.inputs)
            pending.extend(op.control_inputs)
    return list(seen.values())


def tflite_macs(model, input_shape):
    """MACs of a `converters.LiteRTModel` run at `input_shape` (dynamic dimensions resized)."""
    interpreter = model.plain_interpreter()  # XNNPACK leaves its inner tensors unshaped
    detail = interpreter.get_input_details()[0]
    resized = tuple(detail["shape"]) != tuple(input_shape)
    if resized:
        interpreter.resize_tensor_input(detail["index"], input_shape, strict=True)
    interpreter.allocate_tensors()
    if resized:  # shapes computed at run time (e.g. flattening for a Dense) are known after it
        interpreter.set_tensor(detail["index"], np.zeros(input_shape, detail["dtype"]))
        interpreter.invoke()
    shapes = {tensor["index"]: tensor["shape"] for tensor in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            continue
        output, weights = shapes[op["outputs"][0]], shapes[op["inputs"][1]]
        if name in ("CONV_2D", "FULLY_CONNECTED"):
            per_output = _product(weights[1:])  # [out, kh, kw, in] or [units, in]
        elif name == "DEPTHWISE_CONV_2D":
            per_output = _product(weights[1:3])  # [1, kh, kw, channels]
        else:
            per_output = int(shapes[op["inputs"][0]][-1])
        total += _product(output) * per_output
    return total
