"""Steps 1-8: each shipped config reproduces the tutorial's own loop, iteration by iteration.

The Lightning side is built from the step's YAML in ``configs/`` (shortened to ``STEPS`` iterations); the reference
is the tutorial's code (bugs fixed) with the tutorial's net, sizes and hyper-parameters written out here, started
from the Lightning model's initial weights and the DataModule's tensors. A changed learning rate, momentum,
optimizer, accumulation or net in a config, or a difference in Lightning's loop, changes the curve.
"""

import numpy as np
import torch
from torch import nn

from conftest import CONFIGS, LossRecorder, assert_curves_equal, quiet_trainer_args
from lit_tutorial.cli import make_cli
from sources import TutorialDynamicNet, TutorialReLU, TutorialTwoLayerNet

STEPS = 64  # divisible by 8, so step 5-1's accumulation windows are all full
N, D_IN, H, D_OUT = 64, 1000, 100, 10  # the tutorial's sizes


def shipped(step: str, tmp_path):
    """The shipped config of ``step``, built by the CLI, with ``STEPS`` iterations on the CPU."""
    return make_cli(["--config", str(CONFIGS / f"{step}.yaml"), f"--data.init_args.steps={STEPS}",
                     "--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
                     *quiet_trainer_args(tmp_path)], run=False)


def fit(cli) -> list[float]:
    recorder = LossRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, cli.datamodule)
    return recorder.losses


def test_step1_by_hand_float64_equals_numpy_loop(tmp_path):
    cli = shipped("step1_warmup", tmp_path)
    assert cli.model.hparams.backprop == "by_hand"  # gradients written out, as numpy has no autograd
    w1, w2 = (w.detach().double().numpy().copy() for w in (cli.model.w1, cli.model.w2))
    x, y = cli.datamodule.x.double().numpy(), cli.datamodule.y.double().numpy()
    assert x.shape == (N, D_IN) and y.shape == (N, D_OUT) and w1.shape == (D_IN, H) and w2.shape == (H, D_OUT)

    losses = fit(cli)
    # Converted to float64 once for the whole fit, not copied on every batch by the precision plugin.
    assert [t.dtype for t in cli.datamodule.train_dataloader().tensors] == [torch.float64, torch.float64]

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


def _autograd_loop(cli, relu) -> list[float]:
    """Steps 2-4's loop: autograd, the hand update with lr 1e-6 and grad.zero_()."""
    w1, w2 = (w.detach().clone().requires_grad_() for w in (cli.model.w1, cli.model.w2))
    x, y, lr, losses = cli.datamodule.x, cli.datamodule.y, 1e-6, []
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
    """Step 2's hand-written backward in float32 follows the same curve as autograd, to float32 rounding."""
    cli = shipped("step2_tensors", tmp_path)
    assert cli.model.hparams.backprop == "by_hand"  # the same curve as autograd, but computed as step 1 does
    expected = _autograd_loop(cli, lambda t: t.clamp(min=0))
    assert_curves_equal(fit(cli), expected, rtol=1e-5)


def test_step3_autograd_equals_hand_loop(tmp_path):
    cli = shipped("step3_autograd", tmp_path)
    assert cli.model.hparams.backprop == "autograd"  # MyReLU would give the same curve: the step is autograd
    expected = _autograd_loop(cli, lambda t: t.clamp(min=0))
    assert_curves_equal(fit(cli), expected, rtol=1e-6)


def test_step4_my_relu_equals_hand_loop(tmp_path):
    cli = shipped("step4_custom_function", tmp_path)
    assert cli.model.hparams.backprop == "my_relu"  # plain autograd would give the same curve
    expected = _autograd_loop(cli, TutorialReLU.apply)
    assert_curves_equal(fit(cli), expected, rtol=1e-6)


def tutorial_sequential() -> nn.Sequential:
    return nn.Sequential(nn.Linear(D_IN, H), nn.ReLU(), nn.Linear(H, D_OUT))


def _with_weights_of(reference: nn.Module, cli) -> nn.Module:
    """The tutorial's net with the Lightning model's initial weights; any layer of another shape fails here."""
    loaded = reference.load_state_dict(cli.model.net.state_dict(), strict=False)
    assert not loaded.missing_keys and set(loaded.unexpected_keys) <= {"_extra_state"}  # DynamicNet's generator
    return reference


def test_step5_nn_equals_hand_update_loop(tmp_path):
    cli = shipped("step5_nn", tmp_path)
    net, x, y = _with_weights_of(tutorial_sequential(), cli), cli.datamodule.x, cli.datamodule.y
    loss_fn, lr, expected = nn.MSELoss(reduction="sum"), 1e-4, []
    for _ in range(STEPS):
        loss = loss_fn(net(x), y)
        expected.append(loss.item())
        net.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in net.parameters():
                param -= lr * param.grad
    assert_curves_equal(fit(cli), expected, rtol=1e-6)


def _optimizer_loop(net, cli, make_optimizer, accumulation_steps=1, depths=None) -> list[float]:
    """Steps 5-1 to 8: the tutorial's optimizer loop, with its loss/8 + step-every-8 when accumulating."""
    x, y, loss_fn = cli.datamodule.x, cli.datamodule.y, nn.MSELoss(reduction="sum")
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


def test_step5_1_accumulation_equals_loss_over_8_and_step_every_8(tmp_path):
    """The Trainer's accumulate_grad_batches equals the tutorial's Adam 0.01, loss/8 and a step every 8."""
    cli = shipped("step5_1_accumulate", tmp_path)
    expected = _optimizer_loop(_with_weights_of(tutorial_sequential(), cli), cli,
                               lambda p: torch.optim.Adam(p, lr=0.01), accumulation_steps=8)
    losses = fit(cli)
    assert_curves_equal(losses, expected, rtol=1e-6)
    # The weights change only at the end of each window of 8.
    assert losses[:8] == [losses[0]] * 8 and losses[8] != losses[7]


def test_step6_adam_equals_hand_loop(tmp_path):
    cli = shipped("step6_optim", tmp_path)
    expected = _optimizer_loop(_with_weights_of(tutorial_sequential(), cli), cli,
                               lambda p: torch.optim.Adam(p, lr=1e-4))
    assert_curves_equal(fit(cli), expected, rtol=1e-6)


def test_step7_custom_module_equals_hand_loop(tmp_path):
    cli = shipped("step7_custom_module", tmp_path)
    expected = _optimizer_loop(_with_weights_of(TutorialTwoLayerNet(D_IN, H, D_OUT), cli), cli,
                               lambda p: torch.optim.SGD(p, lr=1e-4))
    assert_curves_equal(fit(cli), expected, rtol=1e-6)


def test_step8_dynamic_net_equals_hand_loop_given_same_depths(tmp_path):
    cli = shipped("step8_control_flow", tmp_path)
    # The tutorial's random.randint(0, 3) per pass, drawn from a copy of the net's own generator.
    draws = torch.Generator()
    draws.set_state(cli.model.net.depth_rng.get_state())
    depths = [int(torch.randint(0, 4, (1,), generator=draws)) for _ in range(STEPS)]
    assert set(depths) == {0, 1, 2, 3}
    expected = _optimizer_loop(_with_weights_of(TutorialDynamicNet(D_IN, H, D_OUT), cli), cli,
                               lambda p: torch.optim.SGD(p, lr=1e-4, momentum=0.9), depths=depths)
    assert_curves_equal(fit(cli), expected, rtol=1e-6)


def test_my_relu_passes_gradcheck():
    from lit_tutorial.models import MyReLU

    x = torch.randn(20, 30, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, x + 0.01, x).requires_grad_()  # keep away from the kink at 0
    assert torch.autograd.gradcheck(MyReLU.apply, (x,))
