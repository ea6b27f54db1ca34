"""psdeploy: deploy Poly-Scale Convolution networks (load, rewrite, export, compile, verify, bench).

The Python API is ``psdeploy.api`` (``from psdeploy import api; api.compile(...)``); the package's
subpackages are the pipeline's stages under their own names (``import psdeploy.compile``), so no
function shadows a package.
"""
