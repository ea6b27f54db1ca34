"""Architectures: the released PSConv modules and the ResNet family built from them."""

from psdeploy.arch.registry import ARCHS, build, get_config, plain_counterpart
from psdeploy.arch.resnet import ResNet, ResNetConfig

__all__ = ["ARCHS", "ResNet", "ResNetConfig", "build", "get_config", "plain_counterpart"]
