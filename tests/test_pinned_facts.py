"""Facts a hand-made bug could once break without any test noticing, each checked against what the tutorial,
torchvision or the README say: the sample grid's captions, the splits and their seeds, where the ``auto``
statistics come from, what counts as a non-finite loss, losses around checkpoints, saves and accumulation windows,
DynamicNet's depth draws, and errors that reach the user through an exception's context."""

import math
import shutil

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from conftest import CONFIGS, csv_logger, logged, quiet_trainer_args, run_cli
from lit_tutorial import plots
from lit_tutorial.callbacks import TestReport
from lit_tutorial.checkpointing import ResumeCheckpoint
from lit_tutorial.data import CIFAR10DataModule, DigitsDataModule, RandomTensorDataModule
from lit_tutorial.errors import UserError
from lit_tutorial.models import ImageClassifier, Regressor
from lit_tutorial.nets import DynamicNet, LeNet, two_layer_sequential


def _quiet_trainer(root, **kwargs) -> L.Trainer:
    kwargs = {"logger": False, "enable_checkpointing": False, **kwargs}
    return L.Trainer(accelerator="cpu", default_root_dir=root, enable_progress_bar=False, enable_model_summary=False,
                     **kwargs)


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]


# --- the sample grid: the tutorial's imshow step ------------------------------------------------------------------


def test_sample_grid_captions_each_test_image_with_its_truth_then_the_models_prediction(
        tiny_vision_root, trust_cifar_files, tmp_path, monkeypatch):
    """The tutorial prints ``GroundTruth:`` under the first test images, then ``Predicted:``: each panel shows the
    test image in torchvision's order, its true class first and the model's class for that image second."""
    figures = {}
    monkeypatch.setattr(plots, "save_png", lambda figure, path: figures.__setitem__(path.stem, figure))
    datamodule = CIFAR10DataModule(str(tiny_vision_root), download=False, batch_size=4, test_batch_size=21)
    torch.manual_seed(0)
    model = ImageClassifier(LeNet(), class_names=list(datamodule.class_names))
    _quiet_trainer(tmp_path, callbacks=[TestReport(sample_images=16)]).test(model, datamodule)

    reference = torchvision.datasets.CIFAR10(tiny_vision_root, train=False)
    images = torch.from_numpy(reference.data[:16]).permute(0, 3, 1, 2)
    truth = reference.targets[:16]
    with torch.no_grad():
        predicted = model(datamodule.normalize(images)).argmax(dim=1).tolist()
    assert predicted != truth  # a random LeNet: truth and prediction differ, so a swap shows
    names = datamodule.class_names
    panels = [ax for ax in figures["test_samples"].axes if ax.get_title()]
    assert len(panels) == 16
    for ax, image, true, pred in zip(panels, images, truth, predicted, strict=True):
        assert ax.get_title() == f"GT {names[true]}\nPred {names[pred]}"
        assert (ax.title.get_color() == "red") == (true != pred)
        shown = ax.images[0].get_array()  # the image itself, back in [0, 1]
        np.testing.assert_allclose(shown, image.permute(1, 2, 0).numpy() / 255, atol=1e-6)


# --- splits: disjoint, covering, a function of their seed, evaluated in the dataset's order ------------------------


def _served_images(loader) -> list[bytes]:
    return [image.numpy().tobytes() for batch in loader for image in batch[0]]


def _cifar(root, seed: int, val_size: int = 8) -> CIFAR10DataModule:
    datamodule = CIFAR10DataModule(str(root), download=False, batch_size=4, val_size=val_size, seed=seed)
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def test_cifar_train_and_val_split_the_training_set_by_seed_and_test_is_torchvisions_order(tiny_vision_root,
                                                                                           trust_cifar_files):
    train_set = torchvision.datasets.CIFAR10(tiny_vision_root, train=True)
    position = {torch.from_numpy(image).permute(2, 0, 1).numpy().tobytes(): i for i, image in enumerate(train_set.data)}
    assert len(position) == 40  # random images: each identifies its row

    def val_and_train(seed: int, global_seed: int) -> tuple[list[int], list[int]]:
        torch.manual_seed(global_seed)  # the split follows data.seed alone, not the global RNG
        datamodule = _cifar(tiny_vision_root, seed)
        val = [position[b] for b in _served_images(datamodule.val_dataloader())]
        train = [position[b] for b in _served_images(datamodule.train_dataloader())]
        return val, train

    for seed in (0, 3):
        val, train = val_and_train(seed, global_seed=1)
        # Disjoint and covering: 8 held out for validation, the other 32 trained on, each once an epoch.
        assert len(val) == 8 and len(train) == 32 and sorted(val + train) == list(range(40))
        # The documented split: a permutation drawn from data.seed, its first val_size rows held out.
        held_out = torch.randperm(40, generator=torch.Generator().manual_seed(seed))[:8].tolist()
        assert sorted(val) == sorted(held_out)
        assert sorted(val) == sorted(val_and_train(seed, global_seed=2)[0])
    assert sorted(val_and_train(0, 1)[0]) != sorted(val_and_train(3, 1)[0])

    # test and predict: the whole test set, in torchvision's order, whatever the seed or the epoch.
    test_set = torchvision.datasets.CIFAR10(tiny_vision_root, train=False)
    expected = [torch.from_numpy(image).permute(2, 0, 1).numpy().tobytes() for image in test_set.data]
    for seed in (0, 3):
        datamodule = _cifar(tiny_vision_root, seed)
        for epoch in (0, 2):
            datamodule.test_dataloader().sampler.set_epoch(epoch)  # as Lightning does before every epoch
            assert _served_images(datamodule.test_dataloader()) == expected
        predict = list(datamodule.predict_dataloader())
        assert _served_images(predict) == expected
        assert torch.cat([labels for _, labels, _ in predict]).tolist() == test_set.targets
        assert torch.cat([index for *_, index in predict]).tolist() == list(range(21))


def test_digits_splits_are_disjoint_cover_all_1797_and_only_train_val_follow_the_seed():
    """scikit-learn's 1,797 digits = train + val + test; the 360 test images are the same whatever data.seed."""
    from sklearn.datasets import load_digits

    def splits(seed: int):
        datamodule = DigitsDataModule(seed=seed)
        datamodule.setup("fit")
        datamodule.setup("test")
        served = {name: _served_images(getattr(datamodule, f"{name}_dataloader")()) for name in ("train", "val", "test")}
        return datamodule, served

    first, served = splits(seed=0)
    assert [len(served[name]) for name in ("train", "val", "test")] == [1797 - 180 - 360, 180, 360]
    everything = served["train"] + served["val"] + served["test"]
    assert len(set(everything)) == 1797  # the digits are 1,797 distinct images: no image twice, none left out

    other, other_served = splits(seed=5)
    assert other_served["test"] == served["test"]  # a fixed test set, in the same order
    assert torch.equal(other.test_index(), first.test_index())
    assert set(other_served["val"]) != set(served["val"])
    assert set(other_served["train"] + other_served["val"]) == set(served["train"] + served["val"])
    assert splits(seed=5)[1]["val"] == other_served["val"]  # the seed decides it, nothing else

    # The test rows are positions in load_digits(): 360 distinct ones, each labelled as scikit-learn labels it.
    index = first.test_index().tolist()
    assert len(set(index)) == 360 and max(index) < 1797
    labels = torch.cat([batch[1] for batch in first.test_dataloader()]).tolist()
    assert labels == load_digits().target[index].tolist()


# --- the auto statistics follow the training split ------------------------------------------------------------------


def test_auto_statistics_are_those_of_exactly_the_training_split_for_each_val_size_and_seed(
        tiny_vision_root, trust_cifar_files, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_vision_root, data)  # the statistics are cached beside the data

    def auto(val_size: int, seed: int, stage: str = "fit"):
        datamodule = CIFAR10DataModule(str(data), download=False, batch_size=4, val_size=val_size, seed=seed,
                                       mean="auto", std="auto")
        datamodule.setup(stage)
        return datamodule

    for val_size, seed in [(8, 0), (4, 0), (8, 1), (8, 0)]:  # the last one from the cache
        datamodule = auto(val_size, seed)
        # Computed here from the very images the training loader serves: float64, population std (the tutorial).
        pixels = torch.cat([batch[0] for batch in datamodule.train_dataloader()]).numpy().astype(np.float64) / 255
        assert len(pixels) == 40 - val_size
        np.testing.assert_allclose(datamodule.mean, pixels.mean(axis=(0, 2, 3)), rtol=0, atol=1e-9)
        np.testing.assert_allclose(datamodule.std, pixels.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)
        # An evaluation normalises with the training split's statistics too.
        evaluation = auto(val_size, seed, stage="test")
        assert (evaluation.mean, evaluation.std) == (datamodule.mean, datamodule.std)
    assert len(list(data.glob("CIFAR10DataModule_stats_*.json"))) == 3


# --- a non-finite loss: NaN, +inf and -inf alike --------------------------------------------------------------------


class LossTurns(nn.Module):
    """Sum-of-squares loss that turns into ``value`` at training batch ``batch`` (``loss + inf`` stays a tensor of
    the graph, as a diverging run's loss would)."""

    def __init__(self, value: float, batch: int) -> None:
        super().__init__()
        self.value, self.batch, self.calls = value, batch, 0

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = (prediction - target).pow(2).sum()
        self.calls += 1
        return loss + self.value if self.calls == self.batch + 1 else loss


class LastWeights(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["+inf", "-inf", "nan"])
def test_any_non_finite_loss_stops_before_its_update_and_keeps_the_last_checkpoint(value, tmp_path):
    torch.manual_seed(0)
    model = Regressor(two_layer_sequential(5, 4, 2), lambda p: torch.optim.SGD(p, lr=1e-3))
    model.loss_fn = LossTurns(value, batch=5)
    datamodule = RandomTensorDataModule(n=8, d_in=5, d_out=2, steps=10)
    last = LastWeights()
    trainer = _quiet_trainer(tmp_path, max_epochs=1, enable_checkpointing=True,
                             callbacks=[last, ResumeCheckpoint(every_n_train_steps=2)])
    with pytest.raises(UserError, match=rf"the loss is {value} at epoch 0, batch 5 \(optimizer step 5\); training "
                                        "stopped before that update"):
        trainer.fit(model, datamodule)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in last.weights.items())  # as after batch 4: no update
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # the last periodic save, not overwritten by the failed run


# --- every logged loss survives a checkpoint -----------------------------------------------------------------------


def test_losses_waiting_at_a_checkpoint_are_logged_and_a_killed_runs_resume_logs_each_once(fresh_processes, tmp_path):
    """600 iterations, handed to the logger every 300: at the periodic save at step 500, 200 losses are waiting. A
    SIGKILL at step 520 runs no hook, so they reach the log only if the save hands them over first; the resumed run
    replays from step 500 and logs the rest."""
    base = ["fit", "--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=600",
            "--trainer.log_every_n_steps=300", *csv_logger(tmp_path / "logs"), *quiet_trainer_args(tmp_path / "run")]
    kill = ["--trainer.callbacks+=conftest.InterruptAt", "--trainer.callbacks.step=520",
            "--trainer.callbacks.how=sigkill"]
    assert fresh_processes.run([*base, *kill]) == -9, fresh_processes.output()[-2000:]
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 500
    assert list(logged(tmp_path / "logs", "train_loss")) == list(range(500))
    assert run_cli([*base, "--ckpt_path", "last"])[0] == 0
    assert list(logged(tmp_path / "logs", "train_loss")) == list(range(600))  # logged() fails on a step twice


# --- periodic saves and gradient accumulation ----------------------------------------------------------------------


class RecordSaves(TorchCheckpointIO):
    """Writes nothing; keeps the position of every checkpoint the run asked to write."""

    def __init__(self) -> None:
        self.positions: list[tuple[int, int]] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        batches = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
        self.positions.append((checkpoint["epoch"], batches))


def test_periodic_saves_land_only_between_accumulation_windows(tmp_path):
    """Step 5-1 accumulates 8 batches per optimizer step, and a checkpoint cannot hold the gradients of a window
    half done: with a save due at every optimizer step, each save is at a window's end (or the epoch's)."""
    torch.manual_seed(0)
    model = Regressor(two_layer_sequential(5, 4, 2), lambda p: torch.optim.SGD(p, lr=1e-3))
    datamodule = RandomTensorDataModule(n=8, d_in=5, d_out=2, steps=20)
    saves = RecordSaves()
    trainer = _quiet_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=8, plugins=[saves], enable_checkpointing=True,
                             callbacks=[ResumeCheckpoint(every_n_train_steps=1)])
    trainer.fit(model, datamodule)
    assert saves.positions == [(0, 8), (0, 16), (0, 20), (1, 8), (1, 16), (1, 20)]


# --- DynamicNet's depths --------------------------------------------------------------------------------------------


def test_dynamic_net_depth_draws_follow_its_seed_alone():
    def draws(seed: int, global_seed: int) -> list[int]:
        torch.manual_seed(global_seed)
        net = DynamicNet(d_in=3, h=2, d_out=1, seed=seed)
        return [net.draw_depth() for _ in range(40)]

    same = draws(seed=7, global_seed=0)
    assert same == draws(seed=7, global_seed=1) and set(same) == {0, 1, 2, 3}  # the tutorial's randint(0, 3)
    assert draws(seed=8, global_seed=0) != same


# --- errors reach the user through the whole cause chain -----------------------------------------------------------


class RaisesAUserErrorInside(L.Callback):
    """Fails at setup the way a library that wraps errors does: another exception raised while a UserError is
    handled, either ``from`` it (``__cause__``) or not (only ``__context__``)."""

    def __init__(self, link: str = "context") -> None:
        self.link = link

    def setup(self, trainer, pl_module, stage) -> None:
        try:
            raise UserError("data.thing is wrong; set it right in the config.")
        except UserError as error:
            if self.link == "cause":
                raise ValueError("Problem building the trainer") from error
            raise ValueError("Problem building the trainer")  # noqa: B904 -- the implicit context is the point


@pytest.mark.parametrize("link", ["context", "cause"])
def test_a_user_error_anywhere_in_the_chain_is_one_sentence(link, tmp_path, capsys):
    code, err = run_cli(["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=2",
                         "--trainer.callbacks+=test_pinned_facts.RaisesAUserErrorInside",
                         f"--trainer.callbacks.link={link}", *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2
    assert _error_lines(err) == ["lit_tutorial: error: data.thing is wrong; set it right in the config."]
