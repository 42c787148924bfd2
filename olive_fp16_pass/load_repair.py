"""Validation of a loaded model, and the repairs that let us convert models ONNX Runtime runs anyway.

`onnx.checker` rejects many models that ONNX Runtime loads and runs: nodes out of topological order
(keras2onnx / tf2onnx era exports), IR < 4 models whose initializers are not graph inputs, `value_info`
entries without a type. Refusing them made the converter useless on a slice of ordinary models, so a model
that fails the checker is repaired on a copy (the caller's proto is never changed) and checked again; every
repair is returned as a sentence for the conversion report. What cannot be repaired but does not stop the
conversion becomes a warning; what makes the graph meaningless (a cycle, a value that nothing produces) is
an error naming the node.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from olive_fp16_pass.errors import ModelFileError
from olive_fp16_pass.external_data_checks import is_external, iter_tensors

_EXTERNAL = onnx.TensorProto.EXTERNAL
_ATTR = onnx.AttributeProto

# In-memory protos this large cannot be serialized for the checker (protobuf's 2 GiB limit).
_CHECKER_LIMIT = 2**31 - 1
# A sparse tensor is densified for conversion; refuse one whose dense form would be absurdly large.
DENSE_LIMIT_BYTES = 1 << 30


@dataclass
class Validated:
    proto: onnx.ModelProto
    repairs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ModelScan:
    """What loading needs to know about a proto before it converts anything, found in one walk of it.

    Loading used to walk every graph and subgraph four times for these (external data in model_io, sparse
    tensors and typeless value_info here, external data again before the checker). Measured on
    bench/synthetic.py's 5k-node graph, those walks plus the checker took 34 ms, and 14 ms with this walk
    (4 ms of it); 1k nodes: 5.7 -> 2.5 ms (bench/results/2026-12-03-loadcheck-cost.md).
    """

    external: bool = False  # a tensor anywhere (graphs, subgraphs, functions) keeps its data in a file
    sparse: bool = False  # a sparse initializer or sparse-tensor attribute in the graph or a subgraph
    typeless_value_info: bool = False  # a value_info without a type in the graph or a subgraph


def scan_model(proto: onnx.ModelProto) -> ModelScan:
    """One walk over the graph, its subgraphs and the model's functions (which count for external data only,
    as neither densify_sparse nor drop_typeless_value_info edits functions)."""
    found = ModelScan()
    _scan_graph(proto.graph, found, whole=True)
    for function in proto.functions:
        _scan_nodes(function.node, found, whole=False)
    return found


def _scan_graph(graph: onnx.GraphProto, found: ModelScan, whole: bool) -> None:
    if whole:
        found.sparse = found.sparse or len(graph.sparse_initializer) > 0
        found.typeless_value_info = found.typeless_value_info or any(
            not v.HasField("type") or v.type.WhichOneof("value") is None for v in graph.value_info
        )
    if not found.external:
        found.external = any(t.data_location == _EXTERNAL for t in graph.initializer) or any(
            _EXTERNAL in (s.values.data_location, s.indices.data_location) for s in graph.sparse_initializer
        )
    _scan_nodes(graph.node, found, whole)


def _scan_nodes(nodes, found: ModelScan, whole: bool) -> None:
    for node in nodes:
        for attr in node.attribute:
            kind = attr.type
            if kind == _ATTR.TENSOR:
                found.external = found.external or attr.t.data_location == _EXTERNAL
            elif kind == _ATTR.TENSORS:
                found.external = found.external or any(t.data_location == _EXTERNAL for t in attr.tensors)
            elif kind == _ATTR.SPARSE_TENSOR or kind == _ATTR.SPARSE_TENSORS:
                found.sparse = found.sparse or whole
                sparse = [attr.sparse_tensor] if kind == _ATTR.SPARSE_TENSOR else attr.sparse_tensors
                found.external = found.external or any(
                    _EXTERNAL in (t.values.data_location, t.indices.data_location) for t in sparse
                )
            elif kind == _ATTR.GRAPH:
                _scan_graph(attr.g, found, whole)
            elif kind == _ATTR.GRAPHS:
                for sub in attr.graphs:
                    _scan_graph(sub, found, whole)


def check_structure(proto: onnx.ModelProto, source: str) -> None:
    """Refuse what is not a model at all, saying "truncated" only when the bytes show it."""
    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.output) == 0):
        raise ModelFileError(f"{source}: not an ONNX model or a truncated one (it holds no graph)")
    if proto.ir_version >= 3 and not proto.opset_import:
        # ModelProto writes its graph (field 7) before opset_import (field 8): a file cut after the graph
        # parses, and is missing exactly this.
        raise ModelFileError(f"{source}: truncated or incomplete ONNX model: the graph is there but no opset_import")


def validate(proto: onnx.ModelProto, source: str, scan: ModelScan | None = None) -> Validated:
    """Check `proto`; on failure repair a copy and check again. Never modifies `proto`.

    `scan`: `scan_model(proto)` when the caller has it already (model_io.load, which needs `external` first).
    """
    check_structure(proto, source)
    scan = scan_model(proto) if scan is None else scan
    result = Validated(proto)
    if scan.sparse:
        result.proto = _copy(proto)
        result.repairs += densify_sparse(result.proto, source)
    if scan.typeless_value_info:
        if result.proto is proto:
            result.proto = _copy(proto)
        result.repairs += drop_typeless_value_info(result.proto.graph)
    # Densifying refuses sparse tensors with external data and the other repairs move no tensor: the copy
    # has external data exactly when `proto` has.
    problem = _checker_problem(result.proto, scan.external)
    if problem is None:
        return result
    if result.proto is proto:
        result.proto = _copy(proto)
    work = result.proto
    result.repairs += sort_graph(work.graph, source, frozenset())
    result.repairs += drop_typeless_value_info(work.graph)
    if work.ir_version < 4:
        result.repairs += initializers_as_inputs(work.graph)
    after = _checker_problem(work, scan.external)
    if after is not None:
        result.warnings.append(
            f"{source}: the input does not pass onnx.checker ({after}); converted as ONNX Runtime would read it, "
            "and the output may not pass the checker either"
        )
    elif not result.repairs:  # the checker's verdict changed with no repair: keep the caller's proto
        result.proto = proto
    return result


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def _checker_problem(proto: onnx.ModelProto, external: bool) -> str | None:
    if proto.ByteSize() > _CHECKER_LIMIT:
        return None  # external data stays on disk; an in-memory proto this large cannot be checked
    if external:
        # The checker resolves an in-memory proto's external data against the current directory, not the
        # model's folder; external_data_checks has already held every reference to stricter rules, so the
        # checker sees the graph with those tensors emptied (a copy: such protos are small).
        proto = _copy(proto)
        for tensor, _ in iter_tensors(proto):
            if is_external(tensor):
                del tensor.external_data[:]
                tensor.data_location = onnx.TensorProto.DEFAULT
                del tensor.dims[:]
                tensor.dims.append(0)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        text = str(exc).strip()
        return " ".join(text.split()[:40]) if text else type(exc).__name__
    return None


def sort_graph(graph: onnx.GraphProto, source: str, outer: frozenset[str]) -> list[str]:
    """Order nodes topologically (stable: nodes already in order keep it), subgraphs included.

    Raises on a cycle or on an input that no node, graph input, initializer or outer scope provides.
    """
    repairs: list[str] = []
    nodes = list(graph.node)
    available = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    available |= {s.values.name for s in graph.sparse_initializer}
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.output:
            if name:
                producer.setdefault(name, i)
    needs = _dependencies(nodes, producer, available, source)
    order, missing = _stable_order(needs)
    if len(order) < len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i in _in_cycles(needs, missing)]
        raise ModelFileError(
            f"{source}: the graph has a cycle through nodes {', '.join(repr(s) for s in stuck[:5])}"
            + (f" and {len(stuck) - 5} more" if len(stuck) > 5 else "")
        )
    if order != list(range(len(nodes))):
        moved = sum(1 for position, i in enumerate(order) if position != i)
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)
        repairs.append(f"sorted the nodes of graph '{graph.name}' topologically ({moved} nodes moved)")
    scope = frozenset(available | set(producer))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                repairs += sort_graph(attr.g, source, scope)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    repairs += sort_graph(sub, source, scope)
    return repairs


def _dependencies(nodes, producer: dict[str, int], available: set[str], source: str) -> list[set[int]]:
    """For each node, the positions of the nodes it reads from; an input nothing provides is refused."""
    needs: list[set[int]] = []
    for i, node in enumerate(nodes):
        deps = set()
        for name in _node_reads(node):
            if name in available and name not in producer:
                continue
            if name in producer:
                if producer[name] != i:
                    deps.add(producer[name])
            elif name not in available:
                raise ModelFileError(
                    f"{source}: node '{node.name or node.op_type}' reads '{name}', which no node, graph input or "
                    "initializer provides"
                )
        needs.append(deps)
    return needs


def _stable_order(needs: list[set[int]]) -> tuple[list[int], list[int]]:
    """Kahn's sort taking the lowest ready position first; also what each unplaced node still waits for."""
    users: list[list[int]] = [[] for _ in needs]
    missing = [len(d) for d in needs]
    for i, deps in enumerate(needs):
        for d in deps:
            users[d].append(i)
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, u)
    return order, missing


def _in_cycles(needs: list[set[int]], missing: list[int]) -> list[int]:
    """Of the nodes a sort could not place, those on a cycle (not the ones merely downstream of one)."""
    stuck = {i for i, m in enumerate(missing) if m > 0}
    while True:
        feeding = {d for i in stuck for d in needs[i] if d in stuck}
        kept = stuck & feeding
        if kept == stuck:
            return sorted(stuck)
        stuck = kept


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """The node's inputs plus the outer-scope names its subgraphs read (they must exist before it runs)."""
    reads = list(node.input)
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in graphs:
            reads += sorted(_free_names(sub))
    return reads


def _free_names(graph: onnx.GraphProto) -> set[str]:
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    local |= {s.values.name for s in graph.sparse_initializer}
    free: set[str] = set()
    for node in graph.node:
        local.update(node.output)
    for node in graph.node:
        free.update(name for name in _node_reads(node) if name not in local)
    return free


def drop_typeless_value_info(graph: onnx.GraphProto) -> list[str]:
    """Remove `value_info` entries that carry no type: they say nothing and trip type inference."""
    kept = [v for v in graph.value_info if v.HasField("type") and v.type.WhichOneof("value") is not None]
    repairs = []
    dropped = len(graph.value_info) - len(kept)
    if dropped:
        del graph.value_info[:]
        graph.value_info.extend(kept)
        repairs.append(f"dropped {dropped} value_info entries without a type in graph '{graph.name}'")
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                repairs += drop_typeless_value_info(sub)
    return repairs


def initializers_as_inputs(graph: onnx.GraphProto) -> list[str]:
    """IR < 4 requires every initializer to be a graph input too (ONNX Runtime does not): add the missing ones,
    typed from the tensor, so the model becomes valid at its own IR version (which is never raised)."""
    inputs = {v.name for v in graph.input}
    added = []
    for tensor in graph.initializer:
        if tensor.name not in inputs:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
            added.append(tensor.name)
    if not added:
        return []
    return [
        f"added {len(added)} initializers as graph inputs, as IR version < 4 requires "
        f"({', '.join(added[:5])}{', ...' if len(added) > 5 else ''})"
    ]


def densify_sparse(proto: onnx.ModelProto, source: str) -> list[str]:
    """Turn sparse initializers into dense ones and sparse Constants into dense Constants.

    The converter (and onnx-ir, which would drop them silently) works on dense tensors; the dense form
    computes the same values and ONNX Runtime loads it.
    """
    repairs: list[str] = []

    def graph_fix(graph: onnx.GraphProto) -> None:
        if graph.sparse_initializer:
            names = []
            for sparse in graph.sparse_initializer:
                graph.initializer.append(_dense(sparse, f"sparse initializer '{sparse.values.name}'", source))
                names.append(sparse.values.name)
            del graph.sparse_initializer[:]
            repairs.append(f"densified {len(names)} sparse initializers ({', '.join(names[:5])})")
        for node in graph.node:
            for attr in node.attribute:
                where = f"node '{node.name or node.op_type}' attribute '{attr.name}'"
                if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    if node.op_type != "Constant" or attr.name != "sparse_value":
                        raise ModelFileError(f"{source}: {where} is a sparse tensor: not supported, refused")
                    dense = _dense(attr.sparse_tensor, where, source)
                    attr.Clear()
                    attr.CopyFrom(onnx.helper.make_attribute("value", dense))
                    repairs.append(f"{where}: sparse Constant made dense")
                elif attr.type == onnx.AttributeProto.SPARSE_TENSORS:
                    raise ModelFileError(f"{source}: {where} holds sparse tensors: not supported, refused")
                for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                    graph_fix(sub)

    graph_fix(proto.graph)
    return repairs


def _dense(sparse: onnx.SparseTensorProto, where: str, source: str) -> onnx.TensorProto:
    values = sparse.values
    if onnx.TensorProto.EXTERNAL in (values.data_location, sparse.indices.data_location):
        raise ModelFileError(f"{source}: {where} keeps its data in an external file: not supported, refused")
    dims = list(sparse.dims)
    count = int(np.prod(dims)) if dims else 1
    try:
        np_type = onnx.helper.tensor_dtype_to_np_dtype(values.data_type)
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{source}: {where} has an unsupported element type {values.data_type}") from None
    if count * np_type.itemsize > DENSE_LIMIT_BYTES:
        raise ModelFileError(
            f"{source}: {where} would take {count * np_type.itemsize} bytes dense (limit {DENSE_LIMIT_BYTES}): refused"
        )
    try:
        data = numpy_helper.to_array(values).reshape(-1)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
        dense = np.zeros(count, dtype=data.dtype)
        # [nnz, rank] coordinates, or [nnz] linearized indices
        flat = np.ravel_multi_index(tuple(indices.T), dims) if indices.ndim == 2 else indices.reshape(-1)
        if flat.shape[0] != data.shape[0] or (flat.size and (flat.min() < 0 or flat.max() >= count)):
            raise ValueError("indices do not match the values or the shape")
        dense[flat] = data
    except ValueError as exc:
        raise ModelFileError(f"{source}: {where} is malformed: {exc}") from None
    return numpy_helper.from_array(dense.reshape(dims), values.name)
