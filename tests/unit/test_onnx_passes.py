"""The graph rewrites of :mod:`streamcast.core.onnx_passes`: only what provably changes
nothing is rewritten (the exporter's test checks the bits on a real step graph)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from streamcast.core.onnx_passes import drop_noop_slices

OPSET = 17


def _slice_graph(
    shape: list[int | None], starts: list[int], ends: list[int], axes: list[int],
    *, steps: list[int] | None = None, runtime_ends: bool = False,
) -> onnx.ModelProto:  # fmt: skip
    """One Slice of an input of ``shape`` (``ends`` fed at run time when asked)."""
    consts = {"starts": starts, "ends": ends, "axes": axes, **({"steps": steps} if steps else {})}
    inits = [
        onnx.numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)
        for name, v in consts.items()
        if not (runtime_ends and name == "ends")
    ]
    node = onnx.helper.make_node("Slice", ["t", *consts], ["out"])
    inputs = [onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, shape)]
    if runtime_ends:
        inputs.append(onnx.helper.make_tensor_value_info("ends", onnx.TensorProto.INT64, [2]))
    out = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph([node], "g", inputs, [out], inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)])


@pytest.mark.parametrize(
    ("graph", "dropped"),
    [
        (_slice_graph([None, 64], [0, 0], [2**31 - 1, 64], [0, 1]), 1),  # h[:, 0:64]
        (_slice_graph([None, 64], [0, 0], [10**9, 10**9], [0, -1], steps=[1, 1]), 1),  # t[:, :]
        (_slice_graph([None, 64], [0, 0], [2**31 - 1, 63], [0, 1]), 0),  # one column short
        (_slice_graph([None, 64], [0, 1], [2**31 - 1, 64], [0, 1]), 0),  # from column 1
        (_slice_graph([None, 64], [0, 0], [2**31 - 1, 64], [0, 1], steps=[1, 2]), 0),  # every other
        (_slice_graph([None, None], [0, 0], [2**31 - 1, 64], [0, 1]), 0),  # width unknown
        (_slice_graph([None, 64], [0, 0], [2**31 - 1, 64], [0, 1], runtime_ends=True), 0),
    ],
)
def test_only_slices_that_provably_keep_everything_are_dropped(
    graph: onnx.ModelProto, dropped: int
) -> None:
    assert drop_noop_slices(graph) == dropped
    assert [n.op_type for n in graph.graph.node] == ["Identity" if dropped else "Slice"]
