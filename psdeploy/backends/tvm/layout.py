"""The data layout TVM compiles convolutions in, chosen per target.

ONNX graphs arrive in NCHW. NHWC (channels innermost, so a vectorized loop over channels reads
contiguous memory) is the layout x86 schedules are often said to prefer; Relax's ``ConvertLayout``
rewrites every conv to NHWC/OHWI with transposes only where the layout changes, and
``FoldConstant`` then applies the weights' transposes at build time. The defaults are what was
measured, not folklore (README, "Data layout"): on the x86 CPU psdeploy's figures come from,
MetaSchedule tuned the NCHW convs faster at the same tuning time, so llvm stays NCHW. On CUDA
nothing has been measured on a GPU yet, so its default is the layout the graph was exported in.

TOPI's Winograd convs are NCHW, so a Winograd build compiles in NCHW.
"""

from __future__ import annotations

from psdeploy.errors import PsdeployError

LAYOUTS = ("nchw", "nhwc")
DEFAULT_LAYOUT = {"cpu": "nchw", "cuda": "nchw"}
CONV_LAYOUTS = {"nhwc": ["NHWC", "OHWI"]}  # data, weight: what ConvertLayout asks of relax.nn.conv2d


def resolve_layout(requested: str | None, device: str, winograd_tile: int) -> str:
    """The layout to build in: the one asked for, else the target's measured default."""
    if winograd_tile:
        if requested not in (None, "nchw"):
            raise PsdeployError(f"--layout {requested}: Winograd convs are built in NCHW; "
                                f"give --layout nchw (or no --layout) with --winograd")
        return "nchw"
    return requested or DEFAULT_LAYOUT[device]


def layout_passes(layout: str) -> list:
    """Relax passes that move every conv to ``layout`` and fold the weights' transposes."""
    from tvm import relax

    if layout == "nchw":  # as imported
        return []
    return [relax.transform.ConvertLayout({"relax.nn.conv2d": CONV_LAYOUTS[layout]}),
            relax.transform.FoldConstant()]
