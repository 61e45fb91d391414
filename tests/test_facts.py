"""What the tutorial, pytorch/examples and torchvision fix, and Lightning's contracts: checked against those
sources' own numbers (layer sizes, parameter counts, hyper-parameters, class order, hand counts), not against the
project's code."""

import re
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from formats import write_cifar10
from torch import nn
from torchvision import transforms

from conftest import CONFIGS, quiet_trainer_args, run_cli
from lit_tutorial.callbacks import TestReport
from lit_tutorial.cli import make_cli
from lit_tutorial.data import CIFAR10DataModule, MNISTDataModule, RandomTensorDataModule
from lit_tutorial.errors import UserError
from lit_tutorial.models import FromScratchRegressor, ImageClassifier, Regressor
from lit_tutorial.nets import LeNet, MnistNet, two_layer_sequential
from sources import source_twin

# torchvision's CIFAR10 label order (batches.meta) and the tutorial's short names for the same classes.
TORCHVISION_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TUTORIAL_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- Lightning's contracts ------------------------------------------------------------------------------------


class CountOptimizerHooks(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls += 1


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_on_before_optimizer_step_runs_on_every_optimizer_step(config, tmp_path, vision_data_args):
    """Lightning runs that hook (gradient clipping, grad-norm logging) inside the closure an optimizer must call."""
    # 16 iterations: two optimizer steps of step 5-1's accumulation windows of 8; a few batches of the image steps.
    short = (["--data.init_args.steps=16"] if "RandomTensorDataModule" in config.read_text()
             else ["--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1"])
    cli = make_cli(["--config", str(config), *short, "--trainer.max_epochs=1", "--trainer.logger=false",
                    *quiet_trainer_args(tmp_path), *vision_data_args(config)], run=False)
    counter = CountOptimizerHooks()
    cli.trainer.callbacks.append(counter)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step > 0 and counter.calls == cli.trainer.global_step


def test_deprecated_calls_fail_the_tests_and_only_lightnings_own_are_let_through():
    """pyproject's filterwarnings: a deprecated call in this project fails its test, so it is fixed before a release
    removes it; the two known deprecated calls inside Lightning itself pass, by module and message."""
    from lightning.fabric.utilities.rank_zero import LightningDeprecationWarning, rank_zero_deprecation

    with pytest.raises(LightningDeprecationWarning):
        rank_zero_deprecation("a deprecated Lightning API")
    leaf_spec = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    for category, message in ((DeprecationWarning, "torchmetrics: deprecated"), (FutureWarning, leaf_spec)):
        with pytest.raises(category):
            warnings.warn_explicit(message, category, "base.py", 1, module="lit_tutorial.models.base")
    warnings.warn_explicit(leaf_spec, FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")
    warnings.warn_explicit("jsonargparse: deprecated", DeprecationWarning, "cli.py", 1, module="lightning.pytorch.cli")
    with pytest.raises(FutureWarning):
        warnings.warn_explicit("another", FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")


# --- the nets: pytorch tutorial and pytorch/examples ----------------------------------------------------------

LENET = {  # the tutorial: conv 3->6 k5, pool 2, conv 6->16 k5, pool 2, fc 400->120->84->10
    "shapes": {"conv1.weight": (6, 3, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
               "fc1.weight": (120, 400), "fc1.bias": (120,), "fc2.weight": (84, 120), "fc2.bias": (84,),
               "fc3.weight": (10, 84), "fc3.bias": (10,)},
    "parameters": 62_006,
    "activations": [("conv1", (2, 6, 28, 28)), ("pool", (2, 6, 14, 14)), ("conv2", (2, 16, 10, 10)),
                    ("pool", (2, 16, 5, 5)), ("fc1", (2, 120)), ("fc2", (2, 84)), ("fc3", (2, 10))],
    "input": (2, 3, 32, 32),
}
MNIST_NET = {  # pytorch/examples: conv 1->32 k3, conv 32->64 k3, pool 2, dropout .25, fc 9216->128, dropout .5, fc
    "shapes": {"conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,), "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
               "fc1.weight": (128, 9216), "fc1.bias": (128,), "fc2.weight": (10, 128), "fc2.bias": (10,)},
    "parameters": 1_199_882,
    "activations": [("conv1", (2, 32, 26, 26)), ("conv2", (2, 64, 24, 24)), ("dropout1", (2, 9216)),
                    ("fc1", (2, 128)), ("dropout2", (2, 128)), ("fc2", (2, 10))],
    "input": (2, 1, 28, 28),
}


@pytest.mark.parametrize("net_class, facts", [(LeNet, LENET), (MnistNet, MNIST_NET)], ids=["LeNet", "MnistNet"])
def test_net_layers_and_parameter_counts_are_the_sources(net_class, facts):
    net = net_class()
    assert {name: tuple(p.shape) for name, p in net.named_parameters()} == facts["shapes"]
    assert sum(p.numel() for p in net.parameters()) == facts["parameters"]
    called = []
    for name, module in net.named_children():
        module.register_forward_hook(lambda m, args, out, name=name: called.append((name, tuple(out.shape))))
    net(torch.zeros(facts["input"]))
    assert called == facts["activations"]


def test_mnist_net_drops_a_quarter_then_half_of_its_activations():
    net = MnistNet().train()
    assert (net.dropout1.p, net.dropout2.p) == (0.25, 0.5)
    torch.manual_seed(0)
    for layer, rate in ((net.dropout1, 0.25), (net.dropout2, 0.5)):
        dropped = (layer(torch.ones(200_000)) == 0).float().mean().item()
        assert dropped == pytest.approx(rate, abs=0.005)
    assert torch.equal(net.eval().dropout1(torch.ones(10)), torch.ones(10))


# --- the shipped image configs: the tutorial's recipe ---------------------------------------------------------


def test_step9_config_is_the_tutorials_recipe(tmp_path, vision_data_args):
    """Step 9 as the tutorial runs it: LeNet, SGD lr 0.001 momentum 0.9, batch 4, 3 epochs, Normalize(0.5, 0.5)."""
    config = CONFIGS / "step9_cifar10.yaml"
    cli = make_cli(["--config", str(config), *vision_data_args(config), *quiet_trainer_args(tmp_path)], run=False)
    source_twin(cli.model.net)  # the tutorial's net loads its weights: the same layers
    optimizer = cli.model.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["dampening"], group["nesterov"]) == (
        0.001, 0.9, 0, 0, False)
    assert cli.datamodule.hparams.batch_size == 4 and cli.trainer.max_epochs == 3
    assert (cli.datamodule.mean, cli.datamodule.std) == ([0.5] * 3, [0.5] * 3)
    assert tuple(cli.model.hparams.class_names) == TUTORIAL_CLASSES


# --- data: torchvision's facts --------------------------------------------------------------------------------


def test_cifar10_class_names_follow_torchvisions_label_order():
    short = dict(zip(TORCHVISION_CIFAR10, TUTORIAL_CLASSES, strict=True))  # airplane -> plane, automobile -> car
    assert CIFAR10DataModule.class_names == tuple(short[name] for name in TORCHVISION_CIFAR10)


@pytest.mark.parametrize("datamodule, stats", [
    (CIFAR10DataModule, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),  # the tutorial's
    (MNISTDataModule, ((0.1307,), (0.3081,))),  # pytorch/examples'
])
def test_normalize_is_totensor_then_normalize_and_denormalize_inverts_it(datamodule, stats, tmp_path):
    dm = datamodule(str(tmp_path))
    images = torch.randint(0, 256, (6, len(stats[0]), 28, 28), dtype=torch.uint8, generator=torch.Generator())
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*stats)])
    expected = torch.stack([reference(image.permute(1, 2, 0).numpy()) for image in images])
    normalized = dm.normalize(images)
    torch.testing.assert_close(normalized, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(dm.denormalize(normalized), images / 255, rtol=0, atol=1e-6)


def test_regression_data_comes_from_its_own_seed():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = RandomTensorDataModule(seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG (weights, dropout) is left alone
    torch.manual_seed(2)
    second, other = RandomTensorDataModule(seed=3), RandomTensorDataModule(seed=4)
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    assert not torch.equal(first.x, other.x)
    assert first.x.shape == (64, 1000) and first.y.shape == (64, 10)  # the tutorial's N, D_in, D_out


@pytest.mark.parametrize("arg, message", [
    ("--data.init_args.batch_size=0", "data.batch_size must be > 0, got 0"),
    ("--data.init_args.mean=[0.5,0.5,0.5]", "data.mean and data.std go together"),  # std alone: test_bad_input.py
])
def test_an_empty_batch_or_a_mean_without_std_is_one_sentence(arg, message, tmp_path, capsys):
    code, err = run_cli(["fit", "--config", str(CONFIGS / "step9_cifar10.yaml"), "--data.init_args.download=false",
                         f"--data.init_args.data_dir={tmp_path}", arg, *quiet_trainer_args(tmp_path / "run")], capsys)
    assert code == 2 and message in _error_line(err)


# --- the test report: counts by hand on an imbalanced test set -------------------------------------------------


class PixelOracle(nn.Module):
    """Predicts the class coded into each image's first pixel (20 x class), shifted by ``shift`` (mod 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = 0
        self.unused = nn.Parameter(torch.zeros(()))  # for the optimizer; adding it to every logit changes nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixel = (x[:, 0, 0, 0] * 0.5 + 0.5) * 255  # undo the tutorial's Normalize(0.5, 0.5)
        predicted = ((pixel / 20).round().long() + self.shift) % 10
        return F.one_hot(predicted, 10).float() * 5 + self.unused


def coded_images(predicted: list[int]) -> torch.Tensor:
    images = torch.zeros(len(predicted), 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(predicted, dtype=torch.uint8) * 20
    return images


# Class t has t + 1 test images, CORRECT[t] of them predicted right, the rest as class t + 1: every class has its
# own accuracy, the micro average (33/55) differs from the macro one, and predicted-class counts differ from true.
CORRECT = [1, 0, 1, 3, 2, 5, 1, 5, 6, 9]


def imbalanced_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    labels, predicted = [], []
    for t, correct in enumerate(CORRECT):
        labels += [t] * (t + 1)
        predicted += [t] * correct + [(t + 1) % 10] * (t + 1 - correct)
    return coded_images(predicted), torch.tensor(labels)


def _quiet_trainer(root, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", default_root_dir=root, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_test_accuracies_are_per_true_class_and_overall_micro(coded_cifar, tmp_path, capsys):
    datamodule = CIFAR10DataModule(str(coded_cifar), download=False, batch_size=8)
    model = ImageClassifier(PixelOracle(), class_names=list(datamodule.class_names))
    (results,) = _quiet_trainer(tmp_path, callbacks=[TestReport(sample_images=0)]).test(model, datamodule)

    totals = [t + 1 for t in range(10)]
    micro, macro = sum(CORRECT) / sum(totals), sum(c / n for c, n in zip(CORRECT, totals, strict=True)) / 10
    assert results["test_acc"] == pytest.approx(micro, abs=1e-6) and abs(micro - macro) > 0.03
    for t, name in enumerate(TUTORIAL_CLASSES):  # label t is torchvision's class t
        assert results[f"test_acc_{name}"] == pytest.approx(CORRECT[t] / totals[t], abs=1e-6), name

    out = capsys.readouterr().out
    table = {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(r"^(\w+)\s+[\d.]+%\s+(\d+)/(\d+)$", out, re.M)}
    assert table == {name: (CORRECT[t], totals[t]) for t, name in enumerate(TUTORIAL_CLASSES)}
    assert re.search(r"^overall\s+60\.00%$", out, re.M)


class ShiftEachEpoch(L.Callback):
    """Epoch e predicts the coded class + e; records ``train_acc`` as logged for each finished epoch."""

    def __init__(self) -> None:
        self.train_acc: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        pl_module.net.shift = trainer.current_epoch
        if trainer.current_epoch:
            self.train_acc.append(float(trainer.callback_metrics["train_acc"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_acc.append(float(trainer.callback_metrics["train_acc"]))


TRAIN_LABELS = torch.arange(40) % 10
TRAIN_CODED = TRAIN_LABELS.tolist()[:30] + ((TRAIN_LABELS[30:] + 9) % 10).tolist()  # 30 right, 10 one class below


@pytest.fixture
def coded_cifar(tmp_path, trust_cifar_files):
    """CIFAR10 files whose images code their prediction: training as TRAIN_CODED, the imbalanced test set."""
    write_cifar10(tmp_path / "data", (coded_images(TRAIN_CODED), TRAIN_LABELS), imbalanced_test_set())
    return tmp_path / "data"


def test_train_accuracy_counts_each_epoch_afresh(coded_cifar, tmp_path):
    datamodule = CIFAR10DataModule(str(coded_cifar), download=False, batch_size=8, val_size=0)
    model = ImageClassifier(PixelOracle(), lambda p: torch.optim.SGD(p, lr=0.1), list(datamodule.class_names))
    recorder = ShiftEachEpoch()
    _quiet_trainer(tmp_path, max_epochs=2, callbacks=[recorder]).fit(model, datamodule)
    # Epoch e predicts coded + e: 30 of 40 right in epoch 0, the other 10 in epoch 1.
    by_hand = [sum((p + epoch) % 10 == label for p, label in zip(TRAIN_CODED, TRAIN_LABELS.tolist(), strict=True)) / 40
               for epoch in range(2)]
    assert by_hand == [0.75, 0.25]
    assert recorder.train_acc == pytest.approx(by_hand, abs=1e-6)


def test_validation_loss_is_the_mean_over_images_not_batches(coded_cifar, tmp_path):
    """7 validation images at batch 4: batches of 4 and 3, so a mean of the two batch means would differ."""
    datamodule = CIFAR10DataModule(str(coded_cifar), download=False, batch_size=4, val_size=7)
    model = ImageClassifier(PixelOracle(), class_names=list(datamodule.class_names))
    (results,) = _quiet_trainer(tmp_path).validate(model, datamodule)
    images, labels = datamodule.split("val")
    logits = model(datamodule.normalize(images)).detach()
    per_image = F.cross_entropy(logits, labels, reduction="none")
    assert abs((per_image[:4].mean() + per_image[4:].mean()) / 2 - per_image.mean()) > 0.1
    assert results["val_loss"] == pytest.approx(per_image.mean().item(), rel=1e-6)
    assert results["val_acc"] == pytest.approx((logits.argmax(1) == labels).float().mean().item(), abs=1e-6)


# --- guards ---------------------------------------------------------------------------------------------------


def _nan_data() -> RandomTensorDataModule:
    datamodule = RandomTensorDataModule(steps=4)
    datamodule.x[0, 0] = float("nan")
    return datamodule


def _infinite_lenet() -> LeNet:
    net = LeNet()
    with torch.no_grad():
        net.fc3.bias[0] = float("inf")  # an infinite logit: the cross-entropy is nan
    return net


@pytest.mark.parametrize("make_model, make_data", [
    (lambda: FromScratchRegressor(backprop="by_hand"), _nan_data),
    (lambda: FromScratchRegressor(backprop="autograd"), _nan_data),
    (lambda: Regressor(two_layer_sequential()), _nan_data),
    (lambda: ImageClassifier(_infinite_lenet(), class_names=list(TUTORIAL_CLASSES)), "cifar"),
], ids=["from_scratch_by_hand", "from_scratch_autograd", "regressor", "image_classifier"])
def test_every_model_stops_on_a_non_finite_loss_before_the_update(make_model, make_data, tiny_vision_root,
                                                                   trust_cifar_files, tmp_path):
    model = make_model()
    datamodule = (CIFAR10DataModule(str(tiny_vision_root), download=False, batch_size=4, val_size=0)
                  if make_data == "cifar" else make_data())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=r"the loss is nan at epoch 0, batch 0 \(optimizer step 0\)"):
        _quiet_trainer(tmp_path, max_epochs=1).fit(model, datamodule)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
