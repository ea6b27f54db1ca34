"""psdeploy: deploy Poly-Scale Convolution networks (load, rewrite, export, compile, verify, bench).

The public API (``psdeploy.api``) is bound here: ``psdeploy.compile(...)`` is the function, and
the pipeline packages of the same names are reached by ``from psdeploy.compile import ...``.
"""

from psdeploy.api import accuracy, bench, compile, export, inspect, load, profile, report, run, verify

__all__ = ["load", "inspect", "export", "compile", "verify", "accuracy", "run", "bench", "profile", "report"]
