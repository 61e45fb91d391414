"""Steps 1-8: each Lightning run reproduces the tutorial's own loop, iteration by iteration.

Every reference below is the tutorial's code (bugs fixed) started from the Lightning model's initial weights and
the DataModule's tensors, so any difference is Lightning's doing.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_curves_equal, fit_and_record
from lit_tutorial.data import RandomTensorDataModule
from lit_tutorial.models import FromScratchRegressor, Regressor
from lit_tutorial.nets import DynamicNet, TwoLayerNet, two_layer_sequential

STEPS = 64  # divisible by 8, so step 5-1's accumulation windows are all full


def data(seed: int = 3) -> RandomTensorDataModule:
    return RandomTensorDataModule(steps=STEPS, seed=seed)


def test_step1_by_hand_float64_equals_numpy_loop(tmp_path):
    torch.manual_seed(1)
    model, dm = FromScratchRegressor(backprop="by_hand"), data()
    w1, w2 = model.w1.detach().double().numpy().copy(), model.w2.detach().double().numpy().copy()
    x, y = dm.x.double().numpy(), dm.y.double().numpy()

    losses = fit_and_record(model, dm, tmp_path, precision="64-true")
    # Converted to float64 once for the whole fit, not copied on every batch by the precision plugin.
    assert [t.dtype for t in dm.train_dataloader().tensors] == [torch.float64, torch.float64]

    expected, lr = [], 1e-6
    for _ in range(STEPS):
        h = x.dot(w1)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(w2)
        expected.append(np.square(y_pred - y).sum())
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2.T)
        grad_h[h < 0] = 0
        grad_w1 = x.T.dot(grad_h)
        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
    assert_curves_equal(losses, expected, rtol=1e-10)


def _autograd_reference(w1, w2, x, y, relu, lr=1e-6):
    """Steps 3 and 4: autograd, the hand update and grad.zero_()."""
    w1, w2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    losses = []
    for _ in range(STEPS):
        loss = (relu(x.mm(w1)).mm(w2) - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            w1 -= lr * w1.grad
            w2 -= lr * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    return losses


def test_step2_tensors_equals_autograd_loop(tmp_path):
    torch.manual_seed(2)
    model, dm = FromScratchRegressor(backprop="by_hand"), data()
    expected = _autograd_reference(model.w1.detach(), model.w2.detach(), dm.x, dm.y, lambda t: t.clamp(min=0))
    assert_curves_equal(fit_and_record(model, dm, tmp_path), expected, rtol=1e-5)


def test_step3_autograd_equals_hand_loop(tmp_path):
    torch.manual_seed(3)
    model, dm = FromScratchRegressor(backprop="autograd"), data()
    expected = _autograd_reference(model.w1.detach(), model.w2.detach(), dm.x, dm.y, lambda t: t.clamp(min=0))
    assert_curves_equal(fit_and_record(model, dm, tmp_path), expected, rtol=1e-6)


def test_step4_my_relu_equals_hand_loop(tmp_path):
    class TutorialReLU(torch.autograd.Function):
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

    torch.manual_seed(4)
    model, dm = FromScratchRegressor(backprop="my_relu"), data()
    expected = _autograd_reference(model.w1.detach(), model.w2.detach(), dm.x, dm.y, TutorialReLU.apply)
    assert_curves_equal(fit_and_record(model, dm, tmp_path), expected, rtol=1e-6)


def _optimizer_reference(net, x, y, make_optimizer, accumulation_steps=1, depths=None):
    """Steps 5-1 to 8: the tutorial's optimizer loop, with its loss/8 + step-every-8 when accumulating."""
    loss_fn = nn.MSELoss(reduction="sum")
    optimizer = make_optimizer(net.parameters())
    losses = []
    for n in range(STEPS):
        y_pred = net(x) if depths is None else net(x, depth=depths[n])
        loss = loss_fn(y_pred, y)
        losses.append(loss.item())
        (loss / accumulation_steps).backward()
        if (n + 1) % accumulation_steps == 0:
            optimizer.step()
            optimizer.zero_grad()
    return losses


def test_step5_nn_equals_hand_update_loop(tmp_path):
    torch.manual_seed(5)
    model, dm = Regressor(two_layer_sequential(), optimizer=lambda p: torch.optim.SGD(p, lr=1e-4)), data()
    net = copy.deepcopy(model.net)
    loss_fn, expected = nn.MSELoss(reduction="sum"), []
    for _ in range(STEPS):
        loss = loss_fn(net(dm.x), dm.y)
        expected.append(loss.item())
        net.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in net.parameters():
                param -= 1e-4 * param.grad
    assert_curves_equal(fit_and_record(model, dm, tmp_path), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("make_net", "make_optimizer", "accumulation"),
    [
        pytest.param(two_layer_sequential, lambda p: torch.optim.Adam(p, lr=0.01), 8, id="step5_1_accumulate"),
        pytest.param(two_layer_sequential, lambda p: torch.optim.Adam(p, lr=1e-4), 1, id="step6_optim"),
        pytest.param(TwoLayerNet, lambda p: torch.optim.SGD(p, lr=1e-4), 1, id="step7_custom_module"),
    ],
)
def test_optimizer_steps_equal_hand_loop(make_net, make_optimizer, accumulation, tmp_path):
    """Step 5-1 also shows that the Trainer's accumulate_grad_batches equals the tutorial's loss/8 + step every 8."""
    torch.manual_seed(6)
    model, dm = Regressor(make_net(), optimizer=make_optimizer), data()
    expected = _optimizer_reference(copy.deepcopy(model.net), dm.x, dm.y, make_optimizer, accumulation)
    losses = fit_and_record(model, dm, tmp_path, accumulate_grad_batches=accumulation)
    assert_curves_equal(losses, expected, rtol=1e-6)
    # The weights change only at the end of each accumulation window.
    window = losses[:accumulation]
    assert window == [window[0]] * accumulation and losses[accumulation] != losses[accumulation - 1]


def test_step8_dynamic_net_equals_hand_loop_given_same_depths(tmp_path):
    class TutorialDynamicNet(nn.Module):
        def __init__(self, d_in, h, d_out):
            super().__init__()
            self.input_linear = nn.Linear(d_in, h)
            self.middle_linear = nn.Linear(h, h)
            self.output_linear = nn.Linear(h, d_out)

        def forward(self, x, depth):
            h_relu = self.input_linear(x).clamp(min=0)
            for _ in range(depth):
                h_relu = self.middle_linear(h_relu).clamp(min=0)
            return self.output_linear(h_relu)

    torch.manual_seed(8)
    sgd = lambda p: torch.optim.SGD(p, lr=1e-4, momentum=0.9)  # noqa: E731
    model, dm = Regressor(DynamicNet(seed=11), optimizer=sgd), data()
    reference = TutorialDynamicNet(1000, 100, 10)
    reference.load_state_dict(model.net.state_dict(), strict=False)
    draws = torch.Generator().manual_seed(11)
    depths = [int(torch.randint(0, 4, (1,), generator=draws)) for _ in range(STEPS)]
    assert set(depths) == {0, 1, 2, 3}
    expected = _optimizer_reference(reference, dm.x, dm.y, sgd, depths=depths)
    assert_curves_equal(fit_and_record(model, dm, tmp_path), expected, rtol=1e-6)


def test_my_relu_passes_gradcheck():
    from lit_tutorial.models import MyReLU

    x = torch.randn(20, 30, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, x + 0.01, x).requires_grad_()  # keep away from the kink at 0
    assert torch.autograd.gradcheck(MyReLU.apply, (x,))
