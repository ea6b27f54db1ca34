"""Parameters and multiply-adds, counted two independent ways (PyTorch as it executes, the ONNX graph),
for every lowering: they must agree, and the deployed forms must cost what the design says."""

from __future__ import annotations

import pytest

from psdeploy.export import export_onnx
from psdeploy.export.counts import count_torch
from psdeploy.load import load_model

LOWERINGS = ["reference", "grouped", "polyphase", "fused"]


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
    for lowering in ("grouped", "fused"):  # exactly the plain network's conv work and weights
        assert exports[lowering].graph.conv_macs == plain.conv_macs
        assert exports[lowering].graph.params == plain.params
    # polyphase: the same kernels on space-to-batch sub-images; 32x32 needs no padding, so no extra work
    poly = exports["polyphase"].graph
    assert (poly.params, poly.conv_macs) == (plain.params, plain.conv_macs)
    assert exports["fused"].graph.gathers == 0 and exports["grouped"].graph.gathers == 12
