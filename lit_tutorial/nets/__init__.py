"""Plain ``nn.Module`` nets, one file per tutorial family; LightningModules in ``lit_tutorial.models`` wrap them."""

from lit_tutorial.nets.regression import DynamicNet, TwoLayerNet, two_layer_sequential
from lit_tutorial.nets.vision import LeNet, MnistNet

__all__ = ["DynamicNet", "LeNet", "MnistNet", "TwoLayerNet", "two_layer_sequential"]
