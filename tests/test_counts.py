"""Parameters and multiply-adds, counted two independent ways (PyTorch as it executes, the ONNX graph),
for every lowering: they must agree, and the deployed forms must cost what the design says."""

from __future__ import annotations

import pytest

from psdeploy.export import export_onnx
from psdeploy.export.counts import count_torch
from psdeploy.load import load_model

LOWERINGS = ["reference", "grouped", "sliced", "aligned", "polyphase", "fused"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("counts")
    loaded = load_model("seeded:ps_resnet_digits@2")
    plain = export_onnx(load_model("seeded:resnet_digits@2"), out / "plain.onnx")
    return {"plain": plain, **{low: export_onnx(loaded, out / f"{low}.onnx", low) for low in LOWERINGS}}


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_torch_and_graph_counts_agree(exports, lowering) -> None:
    result = exports[lowering]
    params, macs = count_torch(result.deploy.model, result.input_shape)
    assert macs == result.graph.macs
    if lowering == "reference":  # the exporter folds some BatchNorms itself: a bias in place of 2 parameters
        assert result.graph.params < params
    else:
        assert params == result.graph.params


def test_counts_of_each_form(exports) -> None:
    plain, ref = exports["plain"].graph, exports["reference"].graph
    released_params, released_macs = exports["grouped"].released_params, exports["grouped"].released_macs
    assert ref.macs == released_macs and released_params > plain.params  # the released form, 1.5x conv2
    for lowering in ("grouped", "sliced", "aligned", "fused"):  # exactly the plain network's conv work and weights
        assert exports[lowering].graph.conv_macs == plain.conv_macs
        assert exports[lowering].graph.params == plain.params
    # polyphase: the same kernels on space-to-batch sub-images; 32x32 needs no padding, so no extra work
    poly = exports["polyphase"].graph
    assert (poly.params, poly.conv_macs) == (plain.params, plain.conv_macs)
    assert exports["fused"].graph.gathers == 0 and exports["grouped"].graph.gathers == 12
    sliced = exports["sliced"].graph  # the same re-orders as Slices and one Concat each: no Gather at all
    assert sliced.gathers == 0 and sliced.ops["Concat"] == 12 and sliced.ops["Slice"] >= 24
    aligned = exports["aligned"].graph  # the re-orders moved to the branch inputs: as many, and no Gather
    assert aligned.gathers == 0 and aligned.ops["Concat"] == 12


def test_aligned_branches_sum_straight_from_their_convs(exports) -> None:
    """``aligned`` re-orders only what a branch conv reads, so every operand of a branch sum is a conv's
    output (the Conv + Add chain runtimes fuse), and every Concat feeds a conv."""
    import onnx

    graph = onnx.load(str(exports["aligned"].path)).graph
    writer = {out: n for n in graph.node for out in n.output}
    readers = {}
    for n in graph.node:
        for value in n.input:
            readers.setdefault(value, []).append(n)
    sums = [n for n in graph.node if n.op_type == "Add" and ".conv2" in n.name]
    assert len(sums) == 12  # two per PSConv layer, six layers
    assert all(writer[v].op_type in ("Conv", "Add") for n in sums for v in n.input)
    assert all(r.op_type == "Conv" for n in graph.node if n.op_type == "Concat" for r in readers[n.output[0]])


def _graph(nodes, inputs, initializers=()):
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
                              list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_count_graph_takes_a_dynamic_batch_as_one() -> None:
    import numpy as np
    from onnx import helper, numpy_helper

    from psdeploy.export.counts import count_graph

    w = numpy_helper.from_array(np.zeros((8, 4, 3, 3), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    dynamic = count_graph(_graph([conv], [("x", ["N", 4, 5, 7])], [w]))
    static = count_graph(_graph([conv], [("x", [1, 4, 5, 7])], [w]))
    assert dynamic.conv_macs == static.conv_macs == 8 * 5 * 7 * 4 * 9


def test_count_graph_weights_in_constants_gemm_and_gathers() -> None:
    import numpy as np
    from onnx import helper, numpy_helper

    from psdeploy.export.counts import count_graph

    def constant(name, array):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))

    nodes = [
        constant("w", np.ones((6, 4), np.float32)),  # a weight stored as a Constant node: counted
        constant("one", np.ones((1,), np.float32)),  # a scalar: not a weight
        constant("idx", np.array([2, 0, 1, 3], np.int64)),  # an integer index: not a weight
        constant("m", np.ones((6, 5), np.float32)),
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
        helper.make_node("Gemm", ["g", "w"], ["h"], transB=1),
        helper.make_node("MatMul", ["h", "m"], ["y"]),
    ]
    counts = count_graph(_graph(nodes, [("x", [1, 4])]))
    assert counts.params == 24 + 30 and counts.gemm_macs == 4 * 6 + 6 * 5 and counts.conv_macs == 0
    assert (counts.gathers, counts.moved_elements) == (1, 4)
    assert counts.ops["Constant"] == 4 and counts.macs == 54

