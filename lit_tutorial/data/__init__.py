"""LightningDataModules: the random tensors of steps 1-8 and the image datasets of steps 9-10."""

from lit_tutorial.data.random_tensors import RandomTensorDataModule
from lit_tutorial.data.vision import CIFAR10DataModule, DigitsDataModule, MNISTDataModule

__all__ = ["CIFAR10DataModule", "DigitsDataModule", "MNISTDataModule", "RandomTensorDataModule"]
