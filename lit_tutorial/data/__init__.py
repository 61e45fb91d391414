"""LightningDataModules: the random tensors of steps 1-8 and the image datasets of steps 9-10 (one file each)."""

from lit_tutorial.data.cifar10 import CIFAR10DataModule
from lit_tutorial.data.digits import DigitsDataModule
from lit_tutorial.data.folder import ImageFolderDataModule
from lit_tutorial.data.mnist import MNISTDataModule
from lit_tutorial.data.random_tensors import RandomTensorDataModule

__all__ = ["CIFAR10DataModule", "DigitsDataModule", "ImageFolderDataModule", "MNISTDataModule",
           "RandomTensorDataModule"]
