"""Verify stage: a built artifact against its checkpoint (parity at its shapes) and the demo's top-1."""

from psdeploy.verify.accuracy import AccuracyReport, check_top1, held_out_top1
from psdeploy.verify.artifact import checked_shapes, verify_artifact, verify_staged

__all__ = ["AccuracyReport", "check_top1", "checked_shapes", "held_out_top1", "verify_artifact", "verify_staged"]
