"""The tutorial's and pytorch/examples' code as they write it, sizes, rates and hyper-parameters included: the
tests (and ``docs/make_figures.py``) build their references from these, never from the project's own classes, so a
changed layer size, dropout rate or learning rate in ``lit_tutorial`` or ``configs/`` fails."""

import numpy as np
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


# --- the tutorial's loops (jcjohnson/pytorch-examples, as in the Chinese tutorial; bugs fixed) ---------------------
# Each takes the initial weights (``start``: the Lightning model's state_dict), x, y and the iteration count, and
# returns the loss it prints at every iteration. The model goes to x's device, as the tutorial's ``.to(device)``.
def tutorial_step1(start, x, y, iterations):
    x, y = x.double().numpy(), y.double().numpy()
    w1, w2 = start["w1"].double().numpy().copy(), start["w2"].double().numpy().copy()
    lr, losses = 1e-6, []
    for n in range(iterations):  # noqa: B007 - the tutorial prints n with the loss
        h = x.dot(w1)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(w2)
        loss = np.square(y_pred - y).sum()
        losses.append(loss)  # print(n, loss)
        grad_y_pred = 2 * (y_pred - y)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h_relu = grad_y_pred.dot(w2.T)
        grad_h = grad_h_relu.copy()
        grad_h[h < 0] = 0
        grad_w1 = x.T.dot(grad_h)
        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
    return losses


def tutorial_step2(start, x, y, iterations):
    w1, w2 = start["w1"].clone(), start["w2"].clone()
    learning_rate, losses = 1e-6, []
    for t in range(iterations):  # noqa: B007 - the tutorial prints t with the loss
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum().item()
        losses.append(loss)  # print(t, loss)
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return losses


def _autograd_loop(start, x, y, iterations, relu):
    w1, w2 = start["w1"].clone().requires_grad_(), start["w2"].clone().requires_grad_()
    lr, losses = 1e-6, []
    for n in range(iterations):  # noqa: B007 - the tutorial prints n with the loss
        y_pred = relu(x.mm(w1)).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())  # print(n, loss.item())
        loss.backward()
        with torch.no_grad():
            w1 -= lr * w1.grad
            w2 -= lr * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses


def tutorial_step3(start, x, y, iterations):
    return _autograd_loop(start, x, y, iterations, lambda h: h.clamp(min=0))


def tutorial_step4(start, x, y, iterations):
    return _autograd_loop(start, x, y, iterations, TutorialReLU.apply)


def _sequential(start, device):
    model = nn.Sequential(nn.Linear(1000, 100), nn.ReLU(), nn.Linear(100, 10))
    model.load_state_dict({k.removeprefix("net."): v for k, v in start.items()})
    return model.to(device)


def tutorial_step5(start, x, y, iterations):
    model, loss_fn, lr, losses = _sequential(start, x.device), nn.MSELoss(reduction="sum"), 1e-4, []
    for n in range(iterations):  # noqa: B007 - the tutorial prints n with the loss
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        losses.append(loss.item())  # print(n, loss.item())
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= lr * param.grad
    return losses


def tutorial_step5_1(start, x, y, iterations):
    model, loss_fn, accumulation_steps, losses = _sequential(start, x.device), nn.MSELoss(reduction="sum"), 8, []
    optimizer = torch.optim.Adam(model.parameters(), 0.01)
    for n in range(iterations):  # noqa: B007 - the tutorial prints n with the loss
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        losses.append(loss.item())  # print(n, loss.item())
        loss = loss / accumulation_steps
        loss.backward()
        if ((n + 1) % accumulation_steps) == 0:
            optimizer.step()
            optimizer.zero_grad()
    return losses


def _optimizer_loop(model, optimizer, x, y, iterations, forward=None):
    loss_fn, losses = nn.MSELoss(reduction="sum"), []
    for n in range(iterations):  # noqa: B007 - the tutorial prints n with the loss
        y_pred = model(x) if forward is None else forward(n)
        loss = loss_fn(y_pred, y)
        losses.append(loss.item())  # print(n, loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses


def tutorial_step6(start, x, y, iterations):
    model = _sequential(start, x.device)
    return _optimizer_loop(model, torch.optim.Adam(model.parameters(), 1e-4), x, y, iterations)


def tutorial_step7(start, x, y, iterations):
    model = TutorialTwoLayerNet(1000, 100, 10)
    model.load_state_dict({k.removeprefix("net."): v for k, v in start.items()})
    model.to(x.device)
    return _optimizer_loop(model, torch.optim.SGD(model.parameters(), 1e-4), x, y, iterations)


def tutorial_step8(start, x, y, iterations, depth_rng: torch.Generator):
    model = TutorialDynamicNet(1000, 100, 10)
    model.load_state_dict({k.removeprefix("net."): v for k, v in start.items() if not k.endswith("_extra_state")})
    model.to(x.device)
    depths = [int(torch.randint(0, 4, (1,), generator=depth_rng)) for _ in range(iterations)]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    return _optimizer_loop(model, optimizer, x, y, iterations, forward=lambda n: model(x, depths[n]))


# --- steps 9 and 10: the training loops (the tutorial's CIFAR10 loop, pytorch/examples' train()) -------------------
# The parity tests in test_vision.py and benchmarks/run.py both run these.
def tutorial_cifar10_loop(net, batches, device="cpu"):
    """Step 9's training loop over ``batches`` (all epochs'), SGD lr 0.001 momentum 0.9; returns every loss (the
    tutorial adds each to ``running_loss`` and prints that every 2000 mini-batches)."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    losses = []
    for inputs, labels in batches:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # running_loss += loss.item()
    return losses


def examples_mnist_train(model, device, train_loader, optimizer, losses):
    """pytorch/examples' mnist/main.py ``train()`` for one epoch, appending every loss to ``losses`` (they print
    every 10th). Their ``Net`` ends in ``log_softmax``; :class:`ExamplesMnistNet` leaves it to this loop."""
    model.train()
    for data, target in train_loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = F.log_softmax(model(data), dim=1)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
