"""Verify stage: a built artifact against its checkpoint (fp32 parity at its shapes, or the int8 accuracy
gate) and the demo's top-1."""

from psdeploy.verify.accuracy import AccuracyReport, check_fits_demo, check_top1, held_out_top1
from psdeploy.verify.artifact import checked_shapes, gate_staged, verify_artifact, verify_staged

__all__ = ["AccuracyReport", "check_fits_demo", "check_top1", "checked_shapes", "gate_staged", "held_out_top1",
           "verify_artifact", "verify_staged"]
