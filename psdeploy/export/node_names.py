"""Node names that say which network layer a node computes, so runtime profiles can be summed per layer.

The dynamo exporter names nodes ``node_conv2d_3`` and keeps the module path only in
metadata, which no runtime carries into its profile. psdeploy's exports name each node
``<module path>::<exporter's name>`` (``stages.0.1.conv2.paths.0.0::node_conv2d_3``);
onnxruntime and OpenVINO report nodes by those names, suffixes aside.
"""

from __future__ import annotations

from pathlib import Path

import onnx

SEPARATOR = "::"
ACTIVATIONS = frozenset({"Relu"})
NAMESPACE_KEY = "namespace"  # the dynamo exporter's per-node module stack: "path: Class/path: Class/op: aten..."


def module_path(namespace: str) -> str:
    """The innermost module of an exporter namespace (the last entry is the op itself)."""
    scopes = [entry.split(":", 1)[0].strip() for entry in namespace.split("/")]
    return next((path for path in reversed(scopes[:-1]) if path), "")


def name_nodes_by_module(model: onnx.ModelProto) -> None:
    """Prefix each node's name with the module path it was exported from (in place). An activation goes
    with the layer it activates (a block's one ReLU module serves three layers), and an op of no module
    (the flatten before the head) with the layer it reads from."""
    path_of_value: dict[str, str] = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        path = module_path(meta.get(NAMESPACE_KEY, ""))
        if (node.op_type in ACTIVATIONS or not path) and node.input and path_of_value.get(node.input[0]):
            path = path_of_value[node.input[0]]
        path_of_value.update((value, path) for value in node.output)
        if path and SEPARATOR not in node.name:
            node.name = f"{path}{SEPARATOR}{node.name}"


def value_layers(path: Path) -> dict[str, str]:
    """Value name -> the layer of the node that writes it: runtimes name some nodes after their output
    (onnxruntime's layout transformer, OpenVINO's nodes that write a graph output)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {value: layer_of(node.name) for node in graph.node for value in node.output}


def layer_of(node_name: str) -> str:
    """The network layer a runtime node belongs to: ``stages.<stage>.<block>.<child>`` inside a block
    (``conv2`` is the PSConv layer), the top-level module elsewhere; '' for nodes the runtime added."""
    if SEPARATOR not in node_name:
        return ""
    parts = node_name.split(SEPARATOR, 1)[0].split(".")
    return ".".join(parts[:4]) if parts[0] == "stages" else parts[0]


def with_layer(node_name: str, layer: str) -> str:
    """``node_name`` under ``layer`` (a runtime node psdeploy attributed to a layer), unless it says one already."""
    return f"{layer}{SEPARATOR}{node_name}" if layer and SEPARATOR not in node_name else node_name
