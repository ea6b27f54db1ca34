"""OpenVINO reads ``ai.psdeploy::PSConv`` nodes: a conversion extension for its ONNX frontend.

OpenVINO's ONNX frontend does not expand model-local functions, so without this a ``fused``
file fails to convert (OpConversionFailure). The node becomes what its ONNX function body
says, in OpenVINO's own ops: one (group) convolution per rate on the masked packed weight,
summed, plus the bias. Exact like the body; the fast form for OpenVINO is ``sliced``.
"""

from __future__ import annotations

import numpy as np

from psdeploy.rewrite.lowerings.fused_op import DOMAIN, OP_TYPE, rate_masks


def _convert(node):
    import openvino.opset13 as ops

    x = node.get_input(0)
    weight, bias = (np.asarray(node.get_input(i).get_node().get_data(), dtype=np.float32) for i in (1, 2))
    stride = [int(v) for v in node.get_attribute("strides")]
    groups, parts = int(node.get_attribute("group")), int(node.get_attribute("parts"))
    rates = [int(v) for v in node.get_attribute("rates")]
    total = None
    for d, mask in rate_masks(weight.shape, groups, parts, rates).items():
        w = weight * mask.numpy()
        if groups > 1:
            w = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
            y = ops.group_convolution(x, ops.constant(w), stride, [d, d], [d, d], [d, d])
        else:
            y = ops.convolution(x, ops.constant(w), stride, [d, d], [d, d], [d, d])
        total = y if total is None else ops.add(total, y)
    return [ops.add(total, ops.constant(bias.reshape(1, -1, 1, 1))).output(0)]


def psconv_extension():
    """For ``openvino.convert_model(..., extension=[psconv_extension()])``."""
    from openvino.frontend.onnx import ConversionExtension

    return ConversionExtension(OP_TYPE, DOMAIN, _convert)
