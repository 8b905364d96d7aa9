"""Rewrites of an exported step graph that change no output bit and save ONNX Runtime work.

:func:`drop_noop_slices` is the one so far: tf2onnx writes a ``Slice`` for every
``t[:, :]`` and ``h[:, 0:units]`` of the step (165 of the 240 in the hidden-64,
horizon-24 graph), ONNX Runtime copies the tensor for each, and they were 6-10 % of a
step's time (``bench/micro.py`` row (d): 24.6 -> 22.7 ms per 1,024 keys). The exporter
applies it to what it writes (``training.export.export_step``), and
:meth:`streamcast.core.model.OnnxStepModel.load` to artifacts exported before, keeping
the rewritten graph only when it reproduces the original's outputs bit for bit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper, shape_inference


def drop_noop_slices(proto: onnx.ModelProto) -> int:
    """Turn every ``Slice`` that keeps all of its input into an ``Identity`` (which ONNX
    Runtime then removes); returns how many (module docstring). The outputs are the same
    bits."""
    inferred = shape_inference.infer_shapes(proto)
    graph = inferred.graph
    shapes = {
        info.name: [d.dim_value if d.HasField("dim_value") else None
                    for d in info.type.tensor_type.shape.dim]
        for info in [*graph.value_info, *graph.input, *graph.output]
    }  # fmt: skip
    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value)
    dropped = 0
    for node in proto.graph.node:
        if node.op_type == "Slice" and _keeps_all(node, constants, shapes.get(node.input[0])):
            data = node.input[0]
            del node.input[:]
            node.input.append(data)
            node.op_type = "Identity"
            dropped += 1
    return dropped


#: an end at or beyond this is "to the end" whatever the dimension (tf2onnx writes 1e9 and
#: INT32_MAX for open ends; no tensor here has a billion rows)
_OPEN_END = 10**9


def _keeps_all(
    node: onnx.NodeProto,
    constants: dict[str, npt.NDArray[np.generic]],
    shape: list[int | None] | None,
) -> bool:
    """Whether the Slice ``node`` (opset >= 10: data, starts, ends[, axes[, steps]]) takes
    every element of its input of ``shape``: all its bounds constant, starts 0, steps 1,
    each end at or past its dimension."""
    if shape is None:
        return False
    bounds = [constants.get(name) if name else None for name in node.input[1:]]
    if any(b is None and name for b, name in zip(bounds, node.input[1:], strict=True)):
        return False  # a bound computed at run time
    starts, ends = bounds[0], bounds[1]
    if starts is None or ends is None:
        return False
    rank = len(shape)
    axes = bounds[2] if len(bounds) > 2 and bounds[2] is not None else np.arange(len(starts))
    steps = bounds[3] if len(bounds) > 3 and bounds[3] is not None else np.ones(len(starts))
    for start, end, axis, step in zip(
        starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist(), strict=True
    ):
        dim = shape[axis % rank] if -rank <= axis < rank else None
        if start != 0 or step != 1 or not (end >= _OPEN_END or (dim is not None and end >= dim)):
            return False
    return True
