"""The graph rewrites of :mod:`streamcast.core.onnx_passes`: only what provably changes
nothing is rewritten (the exporter's test checks the bits on a real step graph)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from streamcast.core.onnx_passes import drop_noop_slices, split_gate_products

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


def _gates_graph(
    *, width: int = 8, parts: int = 4, axis: int = -1, sizes: list[int] | None = None,
    weights_input: bool = False, product_used: bool = False, bias_width: int | None = None,
) -> onnx.ModelProto:  # fmt: skip
    """``Split(Add(MatMul(a, W), b))`` as an LSTM cell's gates are written, each part
    through a sigmoid; variants that must not be rewritten by the keyword arguments."""
    rng = np.random.default_rng(0)
    helper, tensor = onnx.helper, onnx.TensorProto
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((5, width)).astype(np.float32), "W"),
        onnx.numpy_helper.from_array(
            rng.standard_normal(bias_width or width).astype(np.float32), "b"
        ),
    ]
    inputs = [helper.make_tensor_value_info("a", tensor.FLOAT, [None, 5])]
    if weights_input:
        inits = inits[1:]
        inputs.append(helper.make_tensor_value_info("W", tensor.FLOAT, [5, width]))
    split_inputs = ["z"]
    if sizes is not None:
        inits.append(onnx.numpy_helper.from_array(np.asarray(sizes, dtype=np.int64), "sizes"))
        split_inputs.append("sizes")
    outs = [f"g{j}" for j in range(parts)]
    nodes = [
        helper.make_node("MatMul", ["a", "W"], ["p"]),
        helper.make_node("Add", ["p", "b"], ["z"]),
        helper.make_node("Split", split_inputs, outs, axis=axis),
        *(helper.make_node("Sigmoid", [o], [f"s{o}"]) for o in outs),
    ]
    outputs = [helper.make_tensor_value_info(f"s{o}", tensor.FLOAT, [None, None]) for o in outs]
    if product_used:
        outputs.append(helper.make_tensor_value_info("p", tensor.FLOAT, [None, None]))
    graph = helper.make_graph(nodes, "gates", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return list(ort.InferenceSession(proto.SerializeToString()).run(None, feeds))


@pytest.mark.parametrize(
    ("kwargs", "rewritten"),
    [
        ({}, True),  # four equal gates
        ({"parts": 2, "sizes": [3, 5]}, True),  # sizes given, uneven
        ({"axis": 1}, True),  # the last axis of the [batch, width] product, by number
        ({"axis": 0}, False),  # splits the batch
        ({"weights_input": True}, False),  # W fed at run time
        ({"product_used": True}, False),  # the product is read elsewhere too
        ({"bias_width": 1}, False),  # a broadcast bias
    ],
)
def test_gate_products_are_split_only_where_each_gate_is_its_columns(
    kwargs: dict[str, object], rewritten: bool
) -> None:
    proto = _gates_graph(**kwargs)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((36, 5)).astype(np.float32)}  # 4 | 36: axis 0 runs
    if kwargs.get("weights_input"):
        feeds["W"] = rng.standard_normal((5, 8)).astype(np.float32)
    before = _run(proto, feeds)
    assert split_gate_products(proto) == int(rewritten)
    ops = [n.op_type for n in proto.graph.node]
    assert ("Split" in ops) is not rewritten
    if rewritten:
        parts = int(kwargs.get("parts", 4))  # type: ignore[call-overload]
        assert ops.count("MatMul") == parts and ops.count("Add") == parts
        assert split_gate_products(proto) == 0, "nothing left to split"
        onnx.checker.check_model(proto)
    for a, b in zip(before, _run(proto, feeds), strict=True):
        np.testing.assert_array_equal(a, b)


def test_steps_sharing_their_weights_share_each_gates_slice_and_the_whole_goes() -> None:
    """The unrolled steps read one W and b: after the rewrite they read one slice pair
    per gate, and W and b, read by nothing, are gone (the artifact keeps its size)."""
    rng = np.random.default_rng(2)
    helper, tensor = onnx.helper, onnx.TensorProto
    inits = [
        onnx.numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "W"),
        onnx.numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
    ]
    nodes, outputs = [], []
    for step in range(3):  # a -> gates -> a' (4 wide) three times, as a rollout chains
        a, p, z = f"a{step}", f"p{step}", f"z{step}"
        gates = [f"g{step}_{j}" for j in range(2)]
        nodes += [
            helper.make_node("MatMul", [a, "W"], [p]),
            helper.make_node("Add", [p, "b"], [z]),
            helper.make_node("Split", [z], gates, axis=-1),
            helper.make_node("Mul", gates, [f"a{step + 1}"]),
        ]
    outputs.append(helper.make_tensor_value_info("a3", tensor.FLOAT, [None, 4]))
    inputs = [helper.make_tensor_value_info("a0", tensor.FLOAT, [None, 4])]
    graph = helper.make_graph(nodes, "steps", inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    feeds = {"a0": rng.standard_normal((9, 4)).astype(np.float32)}
    before = _run(proto, feeds)
    size = len(proto.SerializeToString())
    assert split_gate_products(proto) == 3
    names = sorted(t.name for t in proto.graph.initializer)
    assert len(names) == 4 and "W" not in names and "b" not in names  # 2 gates x (W, b)
    assert len(proto.SerializeToString()) < size + 400  # names and framing, no copies
    onnx.checker.check_model(proto)
    np.testing.assert_array_equal(before[0], _run(proto, feeds)[0])


def test_graphs_with_subgraphs_and_weights_a_feed_may_replace_are_left_as_they_are() -> None:
    # a weight that is also a graph input (IR < 4 lets a feed override it)
    proto = _gates_graph()
    weights = next(t for t in proto.graph.initializer if t.name == "W")
    proto.graph.input.append(
        onnx.helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, list(weights.dims))
    )
    assert split_gate_products(proto) == 0
    # a subgraph may read the product (the pass counts the top-level graph's uses only)
    proto = _gates_graph()
    body = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["p"], ["q"])], "body", [],
        [onnx.helper.make_tensor_value_info("q", onnx.TensorProto.FLOAT, None)],
    )  # fmt: skip
    cond = onnx.numpy_helper.from_array(np.array(True), "cond")
    proto.graph.initializer.append(cond)
    proto.graph.node.append(
        onnx.helper.make_node("If", ["cond"], ["branch"], then_branch=body, else_branch=body)
    )
    assert split_gate_products(proto) == 0
