"""Steps 1-8: each shipped config reproduces the tutorial's own loop, iteration by iteration.

The Lightning side is built from the step's YAML in ``configs/`` (shortened to ``STEPS`` iterations); the reference
is the tutorial's code (bugs fixed) with the tutorial's nets, sizes and hyper-parameters, written out in
``tests/sources.py``, started from the Lightning model's initial weights and the DataModule's tensors. A changed
learning rate, momentum, optimizer, accumulation or net in a config, or a difference in Lightning's loop, changes
the curve.
"""

import torch

from conftest import CONFIGS, LossRecorder, assert_curves_equal, quiet_trainer_args
from lit_tutorial.cli import make_cli
from sources import (
    tutorial_step1,
    tutorial_step2,
    tutorial_step3,
    tutorial_step4,
    tutorial_step5,
    tutorial_step5_1,
    tutorial_step6,
    tutorial_step7,
    tutorial_step8,
)

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


def start_of(cli) -> dict[str, torch.Tensor]:
    """The Lightning model's initial weights, before fit changes them; the tutorial's loops start from these (each
    loads them strictly into the tutorial's own net, so a layer of another shape fails)."""
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_step1_by_hand_float64_equals_numpy_loop(tmp_path):
    cli = shipped("step1_warmup", tmp_path)
    assert cli.model.hparams.backprop == "by_hand"  # gradients written out, as numpy has no autograd
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    assert x.shape == (N, D_IN) and y.shape == (N, D_OUT)
    assert start["w1"].shape == (D_IN, H) and start["w2"].shape == (H, D_OUT)
    losses = fit(cli)
    # Converted to float64 once for the whole fit, not copied on every batch by the precision plugin.
    assert [t.dtype for t in cli.datamodule.train_dataloader().tensors] == [torch.float64, torch.float64]
    assert_curves_equal(losses, tutorial_step1(start, x, y, STEPS), rtol=1e-10)


def test_step2_tensors_equals_the_tutorials_tensor_loop(tmp_path):
    """Step 2's hand-written backward in float32 follows the tutorial's tensor loop, to float32 rounding."""
    cli = shipped("step2_tensors", tmp_path)
    assert cli.model.hparams.backprop == "by_hand"  # the same curve as autograd, but computed as step 1 does
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    assert_curves_equal(fit(cli), tutorial_step2(start, x, y, STEPS), rtol=1e-5)


def test_step3_autograd_equals_hand_loop(tmp_path):
    cli = shipped("step3_autograd", tmp_path)
    assert cli.model.hparams.backprop == "autograd"  # MyReLU would give the same curve: the step is autograd
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    assert_curves_equal(fit(cli), tutorial_step3(start, x, y, STEPS), rtol=1e-6)


def test_step4_my_relu_equals_hand_loop(tmp_path):
    cli = shipped("step4_custom_function", tmp_path)
    assert cli.model.hparams.backprop == "my_relu"  # plain autograd would give the same curve
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    assert_curves_equal(fit(cli), tutorial_step4(start, x, y, STEPS), rtol=1e-6)


def test_step5_nn_equals_hand_update_loop(tmp_path):
    cli = shipped("step5_nn", tmp_path)
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    # SGD rounds p - lr * grad once, the tutorial's p -= lr * p.grad twice: 1-ulp differences that grow as the loss
    # falls (3e-6 by iteration 64 with one torch thread, less with two; docs/walkthrough.md, step 5).
    assert_curves_equal(fit(cli), tutorial_step5(start, x, y, STEPS), rtol=1e-5)


def test_step5_1_accumulation_equals_loss_over_8_and_step_every_8(tmp_path):
    """The Trainer's accumulate_grad_batches equals the tutorial's Adam 0.01, loss/8 and a step every 8."""
    cli = shipped("step5_1_accumulate", tmp_path)
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    losses = fit(cli)
    assert_curves_equal(losses, tutorial_step5_1(start, x, y, STEPS), rtol=1e-6)
    # The weights change only at the end of each window of 8.
    assert losses[:8] == [losses[0]] * 8 and losses[8] != losses[7]


def test_step6_adam_equals_hand_loop(tmp_path):
    cli = shipped("step6_optim", tmp_path)
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    assert_curves_equal(fit(cli), tutorial_step6(start, x, y, STEPS), rtol=1e-6)


def test_step7_custom_module_equals_hand_loop(tmp_path):
    cli = shipped("step7_custom_module", tmp_path)
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y
    assert_curves_equal(fit(cli), tutorial_step7(start, x, y, STEPS), rtol=1e-6)


def test_step8_dynamic_net_equals_hand_loop_given_same_depths(tmp_path):
    cli = shipped("step8_control_flow", tmp_path)
    start, x, y = start_of(cli), cli.datamodule.x, cli.datamodule.y

    def draws() -> torch.Generator:
        """The tutorial's random.randint(0, 3) per pass, drawn from a copy of the net's own generator."""
        generator = torch.Generator()
        generator.set_state(cli.model.net.depth_rng.get_state())
        return generator

    generator = draws()
    assert {int(torch.randint(0, 4, (1,), generator=generator)) for _ in range(STEPS)} == {0, 1, 2, 3}
    expected = tutorial_step8(start, x, y, STEPS, depth_rng=draws())
    assert_curves_equal(fit(cli), expected, rtol=1e-6)


def test_my_relu_passes_gradcheck():
    from lit_tutorial.models import MyReLU

    x = torch.randn(20, 30, dtype=torch.float64)
    x = torch.where(x.abs() < 1e-3, x + 0.01, x).requires_grad_()  # keep away from the kink at 0
    assert torch.autograd.gradcheck(MyReLU.apply, (x,))
