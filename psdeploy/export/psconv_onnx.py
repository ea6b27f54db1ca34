"""ONNX form of ``psdeploy::psconv``: an ``ai.psdeploy::PSConv`` node with its own definition.

The node carries the lattice as attributes (``strides``, ``group``, ``parts``, ``rates``,
row-major ``parts x parts``), so TVM can compile it as one computation. Every other
ONNX consumer needs its meaning spelled out: each distinct node signature gets a
model-local function (an IR v10 overload) whose body is one masked standard Conv per
rate, so onnxruntime runs and verifies the very file TVM compiles.
"""

from __future__ import annotations

import onnx
import onnxscript
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.defs import OpSchema

from psdeploy.rewrite.lowerings.fused_op import DOMAIN, OP_TYPE, rate_masks

MIN_IR_VERSION = 10  # function overloads

_P = OpSchema.FormalParameter
_SCHEMA = OpSchema(
    OP_TYPE, DOMAIN, 1,
    doc="PSConv layer: packed 3x3 weight, block (o, i) of each card applied at rates[o * parts + i]",
    inputs=[_P("X", "T"), _P("W", "T"), _P("B", "T")], outputs=[_P("Y", "T")],
    type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
    attributes=[OpSchema.Attribute(name, kind, "") for name, kind in (
        ("strides", OpSchema.AttrType.INTS), ("group", OpSchema.AttrType.INT),
        ("parts", OpSchema.AttrType.INT), ("rates", OpSchema.AttrType.INTS))],
)
_OP = onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, 1), OP_TYPE, _SCHEMA)


def _translate(x, weight, bias, stride: int, groups: int, parts: int, rates: list[int]):
    return _OP(x, weight, bias, strides=[stride, stride], group=groups, parts=parts, rates=list(rates))


def translation_table() -> dict:
    """For ``torch.onnx.export(..., custom_translation_table=...)``."""
    return {torch.ops.psdeploy.psconv.default: _translate}


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _signature(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> str:
    a = _attrs(node)
    return (f"s{a['strides'][0]}_g{a['group']}_p{a['parts']}_r{''.join(map(str, a['rates']))}"
            f"_w{'x'.join(map(str, weight_shape))}")


def _function(overload: str, node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> onnx.FunctionProto:
    """Body: sum over rates d of Conv(X, W * mask_d, dilation d, padding d) + B."""
    a = _attrs(node)
    masks = rate_masks(weight_shape, int(a["group"]), int(a["parts"]), list(a["rates"]))
    nodes, terms = [], []
    for d, mask in masks.items():
        nodes.append(helper.make_node("Constant", [], [f"mask{d}"],
                                      value=numpy_helper.from_array(mask.numpy(), f"mask{d}")))
        nodes.append(helper.make_node("Mul", ["W", f"mask{d}"], [f"w{d}"]))
        nodes.append(helper.make_node("Conv", ["X", f"w{d}"], [f"y{d}"], dilations=[d, d], pads=[d] * 4,
                                      strides=list(a["strides"]), group=int(a["group"])))
        terms.append(f"y{d}")
    total = terms[0]
    for n, term in enumerate(terms[1:]):
        nodes.append(helper.make_node("Add", [total, term], [f"sum{n}"]))
        total = f"sum{n}"
    nodes.append(helper.make_node("Constant", [], ["bshape"], value=helper.make_tensor("bshape", TensorProto.INT64,
                                                                                        [4], [1, -1, 1, 1])))
    nodes.append(helper.make_node("Reshape", ["B", "bshape"], ["b4"]))
    nodes.append(helper.make_node("Add", [total, "b4"], ["Y"]))
    function = helper.make_function(DOMAIN, OP_TYPE, ["X", "W", "B"], ["Y"], nodes,
                                    [helper.make_opsetid("", 18)], attributes=[])
    function.overload = overload
    return function


def define_psconv_functions(model: onnx.ModelProto) -> int:
    """Give every PSConv node of ``model`` a function body; returns how many nodes there were."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    defined = {(f.domain, f.name, f.overload) for f in model.functions}
    count = 0
    for node in model.graph.node:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            continue
        weight_shape = shapes[node.input[1]]
        node.overload = _signature(node, weight_shape)
        if (DOMAIN, OP_TYPE, node.overload) not in defined:
            model.functions.append(_function(node.overload, node, weight_shape))
            defined.add((DOMAIN, OP_TYPE, node.overload))
        count += 1
    if count:
        model.ir_version = max(model.ir_version, MIN_IR_VERSION)
        if not any(o.domain == DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return count
