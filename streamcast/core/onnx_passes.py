"""Rewrites of an exported step graph that change no output bit and save ONNX Runtime work.

- :func:`drop_noop_slices`: tf2onnx writes a ``Slice`` for every ``t[:, :]`` and
  ``h[:, 0:units]`` of the step (165 of the 240 in the hidden-64, horizon-24 graph), ONNX
  Runtime copies the tensor for each, and they were 6-10 % of a step's time
  (``bench/micro.py`` row (d): 24.6 -> 22.7 ms per 1,024 keys).
- :func:`split_gate_products`: each LSTM cell computes its four gates as one product
  ``[input, h] @ W + b`` and splits it; one product per gate instead needs no ``Split``
  copy, and ONNX Runtime fuses each gate's product with its sigmoid or tanh
  (``FusedGemm``). Hidden 64, horizon 24, 1,024 keys: 11.25 -> 10.17 ms per step.

The exporter applies both to what it writes (``training.export.export_step``), and
:meth:`streamcast.core.model.OnnxStepModel.load` to artifacts exported before, keeping
the rewritten graph only when it reproduces the original's outputs bit for bit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper, shape_inference


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


def split_gate_products(proto: onnx.ModelProto) -> int:
    """Turn every ``Split(Add(MatMul(a, W), b))`` along the last axis, with ``W`` and
    ``b`` constant and the product and the sum used by nothing else, into one
    ``Add(MatMul(a, W[:, part]), b[part])`` per part; returns how many (module
    docstring). Each output element is the same dot product over the same terms.

    The steps of the unrolled graph share their weights, and so do their parts: each
    ``(W, b, part)`` is one initializer pair, and a ``W`` or ``b`` no node reads any more
    is dropped (the file stays its size). A graph with subgraphs (``If``, ``Loop``,
    ``Scan``: uses this pass cannot see) is left as it is.
    """
    graph = proto.graph
    if any(a.type in _SUBGRAPHS for node in graph.node for a in node.attribute):
        return 0
    overridable = {i.name for i in graph.input}  # an initializer a feed may replace
    constants = {t.name: t for t in graph.initializer if t.name not in overridable}
    producer = {out: node for node in graph.node for out in node.output}
    uses = _uses(graph)
    taken = {*constants, *producer, *overridable}
    ranks = {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in shape_inference.infer_shapes(proto).graph.value_info
        if info.type.tensor_type.HasField("shape")
    }
    replaced: dict[int, list[onnx.NodeProto]] = {}
    slices: dict[tuple[str, str, int, int], tuple[str, str]] = {}
    sources: set[str] = set()
    for node in graph.node:
        found = _gate_product(node, producer, constants, uses, ranks)
        if found is None:
            continue
        product, add, a, bias_name, sizes = found
        weights_name = product.input[1]
        sources.update((weights_name, bias_name))
        parts: list[onnx.NodeProto] = []
        start = 0
        for j, (size, out) in enumerate(zip(sizes, node.output, strict=True)):
            pair = slices.get((weights_name, bias_name, start, size))
            if pair is None:
                base = _fresh(f"{weights_name}/gate{j}", taken)
                pair = slices[weights_name, bias_name, start, size] = (
                    _fresh(f"{base}/W", taken), _fresh(f"{base}/b", taken)
                )  # fmt: skip
                columns = slice(start, start + size)
                weights = numpy_helper.to_array(constants[weights_name])
                bias = numpy_helper.to_array(constants[bias_name])
                graph.initializer.extend([
                    numpy_helper.from_array(np.ascontiguousarray(weights[:, columns]), pair[0]),
                    numpy_helper.from_array(np.ascontiguousarray(bias[columns]), pair[1]),
                ])  # fmt: skip
            product_name = _fresh(f"{node.name or node.output[0]}/gate{j}/p", taken)
            parts.append(helper.make_node("MatMul", [a, pair[0]], [product_name]))
            parts.append(helper.make_node("Add", [product_name, pair[1]], [out]))
            start += size
        replaced[id(node)], replaced[id(add)], replaced[id(product)] = parts, [], []
    if not replaced:
        return 0
    nodes = [new for node in graph.node for new in replaced.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    unused = sources - set(_uses(graph))
    kept = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return sum(1 for parts in replaced.values() if parts)


#: attribute types that hold a subgraph
_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _uses(graph: onnx.GraphProto) -> dict[str, int]:
    """How many node inputs and graph outputs read each tensor."""
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for output in graph.output:
        uses[output.name] = uses.get(output.name, 0) + 1
    return uses


def _gate_product(
    split: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    constants: dict[str, onnx.TensorProto],
    uses: dict[str, int],
    ranks: dict[str, int],
) -> tuple[onnx.NodeProto, onnx.NodeProto, str, str, list[int]] | None:
    """``(MatMul, Add, a, the name of b, part sizes)`` when ``split`` splits a constant
    affine product :func:`split_gate_products` can take apart (``W`` is the MatMul's
    second input), else None."""
    if split.op_type != "Split" or len(split.output) < 2 or any(not o for o in split.output):
        return None
    add = producer.get(split.input[0])
    if add is None or add.op_type != "Add" or uses.get(add.output[0]) != 1:
        return None
    product = next((producer[i] for i in add.input if i in producer
                    and producer[i].op_type == "MatMul"), None)  # fmt: skip
    bias_name = next((i for i in add.input if i in constants), None)
    if product is None or bias_name is None or uses.get(product.output[0]) != 1:
        return None
    if product.input[1] not in constants:
        return None
    weights = numpy_helper.to_array(constants[product.input[1]])
    bias = numpy_helper.to_array(constants[bias_name])
    if weights.ndim != 2 or bias.shape != (weights.shape[1],) or weights.dtype != bias.dtype:
        return None
    sizes = _split_sizes(split, constants, weights.shape[1], ranks.get(split.input[0]))
    if sizes is None:
        return None
    return product, add, product.input[0], bias_name, sizes


def _split_sizes(
    split: onnx.NodeProto, constants: dict[str, onnx.TensorProto], width: int, rank: int | None
) -> list[int] | None:
    """The part sizes of ``split`` over a last axis of ``width`` (the ``split`` input or
    attribute, else equal parts), or None when it is not the last axis (of a tensor of
    ``rank``) or not known."""
    attributes = {a.name: helper.get_attribute_value(a) for a in split.attribute}
    axis = attributes.get("axis", 0)
    if axis != -1 and (rank is None or axis != rank - 1):
        return None
    sizes: list[int] | None = None
    if len(split.input) > 1 and split.input[1]:
        if split.input[1] not in constants:
            return None
        sizes = [int(v) for v in numpy_helper.to_array(constants[split.input[1]]).tolist()]
    elif "split" in attributes:
        sizes = [int(v) for v in attributes["split"]]
    elif width % len(split.output) == 0:
        sizes = [width // len(split.output)] * len(split.output)
    if sizes is None or len(sizes) != len(split.output) or sum(sizes) != width:
        return None
    return sizes


def _fresh(name: str, taken: set[str]) -> str:
    """``name``, suffixed until no tensor of the graph has it; then taken."""
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate
