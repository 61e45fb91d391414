"""The nets as their sources write them, sizes and rates included: the tests (and ``docs/make_figures.py``) build
their references from these, never from the project's own classes, so a changed layer size or dropout rate in
``lit_tutorial.nets`` fails."""

import torch
import torch.nn.functional as F
from torch import nn


class TutorialReLU(torch.autograd.Function):
    """Step 4's ``MyReLU`` as the tutorial writes it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_x = grad_output.clone()
        grad_x[x < 0] = 0
        return grad_x


class TutorialTwoLayerNet(nn.Module):
    """Step 7's ``TwoLayerNet``."""

    def __init__(self, D_in, H, D_out):  # noqa: N803 - the tutorial's names
        super().__init__()
        self.linear1 = nn.Linear(D_in, H)
        self.linear2 = nn.Linear(H, D_out)

    def forward(self, x):
        h_relu = self.linear1(x).clamp(min=0)
        y_pred = self.linear2(h_relu)
        return y_pred


class TutorialDynamicNet(nn.Module):
    """Step 8's ``DynamicNet``, with the depth passed in: its ``random.randint(0, 3)`` becomes the project's draws."""

    def __init__(self, D_in, H, D_out):  # noqa: N803 - the tutorial's names
        super().__init__()
        self.input_linear = nn.Linear(D_in, H)
        self.middle_linear = nn.Linear(H, H)
        self.output_linear = nn.Linear(H, D_out)

    def forward(self, x, depth):
        h_relu = self.input_linear(x).clamp(min=0)
        for _ in range(depth):
            h_relu = self.middle_linear(h_relu).clamp(min=0)
        y_pred = self.output_linear(h_relu)
        return y_pred


class TutorialCifarNet(nn.Module):
    """The tutorial's step 9 net (its ``Module`` class), line for line."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


class ExamplesMnistNet(nn.Module):
    """pytorch/examples' ``mnist/main.py`` ``Net``, line for line, but for its final ``log_softmax``: the project's
    loss, ``F.cross_entropy``, is that ``log_softmax`` followed by the example's ``nll_loss``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        return x


def source_twin(net: nn.Module) -> nn.Module:
    """The source's net carrying ``net``'s weights; loading is strict, so any layer of another size fails here."""
    twin = {"LeNet": TutorialCifarNet, "MnistNet": ExamplesMnistNet}[type(net).__name__]()
    twin.load_state_dict(net.state_dict())
    return twin.train(net.training)
