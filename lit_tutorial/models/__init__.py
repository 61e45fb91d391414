"""LightningModules: thin wrappers that train the plain nets in ``lit_tutorial.nets``."""

from lit_tutorial.models.classifier import ImageClassifier
from lit_tutorial.models.from_scratch import FromScratchRegressor, MyReLU
from lit_tutorial.models.regressor import Regressor

__all__ = ["FromScratchRegressor", "ImageClassifier", "MyReLU", "Regressor"]
