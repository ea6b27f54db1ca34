"""Load step: checkpoint file -> verified PyTorch model of the released architecture."""

from psdeploy.load.loader import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
