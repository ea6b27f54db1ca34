"""One exception type whose message is the whole user-facing story.

The CLI prints ``str(error)`` on one line and exits non-zero, so every message
names the file/layer/option at fault and what was expected instead.
"""


class PsdeployError(Exception):
    """A user-facing failure: bad input, failed verification, missing toolchain."""


class VerificationError(PsdeployError):
    """A transformed model does not reproduce its reference within tolerance."""
