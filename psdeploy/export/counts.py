"""Parameters and multiply-adds counted from an ONNX graph itself (per sample)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import prod

import onnx
import torch
from onnx import shape_inference


@dataclass(frozen=True, order=True)
class ConvKey:
    """One conv as two runtimes can both name it (onnxruntime names graph nodes, TVM fused kernels): what it
    writes and the multiply-adds behind each output value. Convs of one network that share a key (a stride-2
    and a stride-1 3x3 with one output) are summed together on both sides, which keeps a comparison fair."""

    out_channels: int
    out_height: int
    out_width: int
    reduction: int  # multiply-adds per output value: C_in/groups x kh x kw

    @property
    def macs(self) -> int:  # per sample
        return self.out_channels * self.out_height * self.out_width * self.reduction

    def flops(self, batch: int) -> float:  # two per multiply-add
        return 2.0 * batch * self.macs

    def __str__(self) -> str:
        return f"{self.out_channels}@{self.out_height}x{self.out_width} r{self.reduction}"


@dataclass
class GraphCounts:
    params: int  # float weights and biases
    conv_macs: int  # multiply-adds of Conv nodes, batch 1
    gemm_macs: int  # multiply-adds of Gemm/MatMul nodes, batch 1
    gathers: int  # Gather nodes (channel shuffles)
    moved_elements: int  # elements those gathers copy, batch 1
    ops: Counter = field(default_factory=Counter)

    @property
    def macs(self) -> int:
        return self.conv_macs + self.gemm_macs


def _static_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    return shape_inference.infer_shapes(model)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        out[value.name] = tuple(d.dim_value for d in dims)
    for init in model.graph.initializer:
        out[init.name] = tuple(init.dims)
    return out


def count_graph(model: onnx.ModelProto) -> GraphCounts:
    model = _static_batch_one(model)
    shapes = _shapes(model)
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    params = sum(prod(i.dims) for i in model.graph.initializer if i.data_type in float_types)
    for node in model.graph.node:  # weights stored as Constant nodes count too
        if node.op_type == "Constant":
            tensor = next((a.t for a in node.attribute if a.name == "value"), None)
            if tensor is not None and tensor.data_type in float_types and prod(tensor.dims) > 1:
                params += prod(tensor.dims)
    conv = gemm = gathers = moved = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "PSConv"):  # PSConv: a 3x3 conv whose kernels carry their own rates
            w = shapes[node.input[1]]
            out = shapes[node.output[0]]
            conv += prod(out) * prod(w[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            trans_b = any(x.name == "transB" and x.i for x in node.attribute)
            n_out = b[0] if trans_b else b[-1]
            gemm += prod(a) * n_out
        elif node.op_type == "Gather":
            gathers += 1
            moved += prod(shapes[node.output[0]])
    return GraphCounts(params, conv, gemm, gathers, moved, Counter(n.op_type for n in model.graph.node))


def conv_keys(model: onnx.ModelProto) -> dict[str, ConvKey]:
    """Node name -> key of every plain Conv node (PSConv nodes have no plain counterpart), at batch 1."""
    model = _static_batch_one(model)
    shapes = _shapes(model)
    keys = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, (_, c, h, width) = shapes[node.input[1]], shapes[node.output[0]]
            keys[node.name] = ConvKey(c, h, width, prod(w[1:]))
    return keys


def count_file(path: str) -> GraphCounts:
    return count_graph(onnx.load(path))


def count_torch(model: torch.nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, conv+linear multiply-adds per sample) of a PyTorch model as it executes.

    The probe runs one sample, so each module's whole output is that sample's: a lowering that moves
    pixels into the batch (polyphase's space-to-batch) is counted in full."""
    from torch import nn

    from psdeploy.arch.probe import probe
    from psdeploy.rewrite.lowerings.fused import FusedPSConv

    macs = 0

    def count(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * prod(module.kernel_size)
            macs += output.numel() * per_out
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        elif isinstance(module, FusedPSConv):
            macs += output.numel() * module.weight[0].numel()

    probe(model, input_shape, (nn.Conv2d, nn.Linear, FusedPSConv), count)
    params = sum(p.numel() for p in model.parameters())
    return params, macs
