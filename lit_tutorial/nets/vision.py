"""Image classifiers: the tutorial's CIFAR10 ``LeNet`` (step 9) and a CNN for 28x28 MNIST digits (step 10)."""

import torch
import torch.nn.functional as F
from torch import nn

from lit_tutorial.errors import require_positive


class LeNet(nn.Module):
    """Step 9's net, the tutorial's layers: conv 3->6 k5, pool, conv 6->16 k5, pool, fc 400->120->84->classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        require_positive("model.net.num_classes", num_classes)
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The tutorial pools after the ReLU. ReLU is monotone, so pooling first gives bit-identical outputs and
        # gradients with a quarter of the values to rectify (tests/test_vision.py checks both orders agree).
        x = F.relu(self.pool(self.conv1(x)))
        x = F.relu(self.pool(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MnistNet(nn.Module):
    """pytorch/examples' MNIST CNN (about 99% on MNIST): two 3x3 convs, max-pool, dropout, two fc layers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        require_positive("model.net.num_classes", num_classes)
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        # pytorch/examples rectifies before pooling and drops out before flattening; this order is bit-identical
        # and cheaper, and dropout draws its mask over the flattened values, the same in any memory format.
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = self.dropout1(torch.flatten(x, 1))
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)
