"""Facts a hand-made bug could once break without any test noticing, each checked against what the tutorial,
torchvision or the README say: the sample grid's captions, the splits and their seeds, where the ``auto``
statistics come from, what counts as a non-finite loss, losses around checkpoints, saves and accumulation windows,
DynamicNet's depth draws, and errors that reach the user through an exception's context."""

import csv
import math
import shutil
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from conftest import CONFIGS, csv_logger, logged, quiet_trainer_args, run_cli
from lit_tutorial import plots
from lit_tutorial.callbacks import PredictionCSVWriter, TestReport
from lit_tutorial.checkpointing import ResumeCheckpoint
from lit_tutorial.cli import make_cli
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


def _test_report_figures(data_dir, tmp_path, monkeypatch, test_batch_size: int, sample_images: int):
    """An untrained LeNet tested on the tiny CIFAR10 files by TestReport; the figures it drew, by file stem."""
    figures = {}
    monkeypatch.setattr(plots, "save_png", lambda figure, path: figures.__setitem__(path.stem, figure))
    datamodule = CIFAR10DataModule(str(data_dir), download=False, batch_size=4, test_batch_size=test_batch_size)
    torch.manual_seed(0)
    model = ImageClassifier(LeNet(), class_names=list(datamodule.class_names))
    _quiet_trainer(tmp_path, callbacks=[TestReport(sample_images=sample_images)]).test(model, datamodule)
    return figures, datamodule, model


def test_sample_grid_captions_each_test_image_with_its_truth_then_the_models_prediction(
        tiny_vision_root, trust_cifar_files, tmp_path, monkeypatch):
    """The tutorial prints ``GroundTruth:`` under the first test images, then ``Predicted:``: each panel shows the
    test image in torchvision's order, its true class first and the model's class for that image second."""
    figures, datamodule, model = _test_report_figures(tiny_vision_root, tmp_path, monkeypatch, test_batch_size=21,
                                                      sample_images=16)

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
        served = {name: _served_images(getattr(datamodule, f"{name}_dataloader")())
                  for name in ("train", "val", "test")}
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
        images = evaluation.split("test")[0][:4]
        assert torch.equal(evaluation.normalize(images), datamodule.normalize(images))
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
    trainer = _quiet_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=8, plugins=[saves],
                             enable_checkpointing=True,
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


# --- the confusion matrix: true classes down, predicted classes across ---------------------------------------------


def test_confusion_matrix_rows_are_true_classes_and_columns_predicted_ones(
        tiny_vision_root, trust_cifar_files, tmp_path, monkeypatch):
    """Counted here from the labels and the model's outputs: the cell in row t, column p holds the test images of
    class t predicted as p, drawn and written at that place, under axes named so."""
    figures, datamodule, model = _test_report_figures(tiny_vision_root, tmp_path, monkeypatch, test_batch_size=8,
                                                      sample_images=0)

    reference = torchvision.datasets.CIFAR10(tiny_vision_root, train=False)
    with torch.no_grad():
        predicted = model(datamodule.normalize(torch.from_numpy(reference.data).permute(0, 3, 1, 2))).argmax(dim=1)
    expected = np.zeros((10, 10), dtype=np.int64)
    for true, pred in zip(reference.targets, predicted.tolist(), strict=True):
        expected[true, pred] += 1
    assert not np.array_equal(expected, expected.T)  # a transposed drawing would show
    (axes,) = figures["confusion_matrix"].axes
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted", "true")
    names = list(datamodule.class_names)
    assert [t.get_text() for t in axes.get_xticklabels()] == names == [t.get_text() for t in axes.get_yticklabels()]
    np.testing.assert_array_equal(axes.images[0].get_array(), expected)  # imshow: row = y = true class
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in axes.texts}
    assert written == {(t, p): expected[t, p] for t in range(10) for p in range(10)}


# --- predictions under DDP: one file per process ---------------------------------------------------------------------


def test_each_ddp_process_writes_its_own_share_of_the_predictions(tiny_vision_root, trust_cifar_files, tmp_path):
    """README: under DDP each process writes ``rank<N>_predictions.csv`` with its share of the rows; together the
    files hold every test image once. Two processes are played here by their rank and world size."""
    torch.manual_seed(0)
    model = ImageClassifier(LeNet(), class_names=list(CIFAR10DataModule.class_names)).eval()
    for rank in (0, 1):
        process = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0, log_dir=str(tmp_path),
                                  default_root_dir=str(tmp_path))
        datamodule = CIFAR10DataModule(str(tiny_vision_root), download=False, batch_size=4, val_size=0)
        datamodule.trainer, process.datamodule = process, datamodule
        datamodule.setup("predict")
        writer = PredictionCSVWriter()
        writer.on_predict_epoch_start(process, model)
        predictions = []
        for i, batch in enumerate(datamodule.predict_dataloader()):
            batch = datamodule.on_after_batch_transfer(batch, 0)
            with torch.no_grad():
                predictions.append(model.predict_step(batch, i))
            writer.on_predict_batch_end(process, model, predictions[-1], batch, i)
        writer.write_on_epoch_end(process, model, predictions, None)
    files = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert files == ["rank0_predictions.csv", "rank1_predictions.csv"]
    rows = [row for name in files for row in csv.DictReader((tmp_path / name).open())]
    assert sorted(int(row["index"]) for row in rows) == list(range(21))


# --- the loss log: handed over every log_every_n_steps iterations ---------------------------------------------------


class HandOvers(Logger):
    """A logger that keeps the iteration numbers it got between two ``save`` calls (one hand-over each)."""

    name, version = "hand_overs", 0

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[list[int]] = [[]]

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "train_loss" in metrics:
            self.groups[-1].append(step)

    def save(self) -> None:
        if self.groups[-1]:
            self.groups.append([])


def test_losses_are_handed_to_the_loggers_every_log_every_n_steps_iterations(tmp_path):
    """README: every iteration's loss, handed over in one go every ``trainer.log_every_n_steps`` iterations and at
    each epoch's end: 2 epochs of 23 at 10 are 10, 10, 3 each, numbered from the start of training."""
    torch.manual_seed(0)
    model = Regressor(two_layer_sequential(5, 4, 2), lambda p: torch.optim.SGD(p, lr=1e-3))
    logger = HandOvers()
    _quiet_trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=10).fit(
        model, RandomTensorDataModule(n=8, d_in=5, d_out=2, steps=23))
    groups = [group for group in logger.groups if group]
    assert groups == [list(range(start, min(start + 10, end))) for first, end in ((0, 23), (23, 46))
                      for start in range(first, end, 10)]


# --- the digits placed like MNIST ------------------------------------------------------------------------------------


def test_digits_fill_a_centred_20x20_box_of_28x28_on_mnists_0_to_255_scale():
    """README: scikit-learn's 8x8 digits (values 0-16) scaled to 20x20 and centred in 28x28 like MNIST: a 4-pixel
    blank border on every side, ink up to 255 as MNIST's."""
    datamodule = DigitsDataModule()
    images, _ = datamodule.load(train=True)
    assert images.shape[1:] == (1, 28, 28) and images.dtype == torch.uint8
    box = torch.zeros(28, 28, dtype=torch.bool)
    box[4:24, 4:24] = True
    assert not images[:, 0, ~box].any()  # nothing outside the box
    used = images[:, 0].amax(dim=0) > 0
    assert used[4:24, 4].any() and used[4:24, 23].any() and used[4, 4:24].any() and used[23, 4:24].any()
    assert images.max() == 255


def test_a_seed_is_refused_outside_0_to_2_to_the_32_minus_1():
    """The range the error message names, both ends included (torch's generators take these, with room for the
    per-epoch offsets)."""
    RandomTensorDataModule(n=2, d_in=2, d_out=1, seed=2**32 - 1)
    RandomTensorDataModule(n=2, d_in=2, d_out=1, seed=0)
    for seed in (-1, 2**32):
        with pytest.raises(UserError, match=rf"data.seed must be between 0 and 4294967295, got {seed}"):
            RandomTensorDataModule(n=2, d_in=2, d_out=1, seed=seed)


def test_runs_are_deterministic_by_default(tmp_path):
    """README: runs are deterministic (``trainer.deterministic: true``): torch's deterministic algorithms are on."""
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        make_cli(["--config", str(CONFIGS / "step6_optim.yaml"), *quiet_trainer_args(tmp_path)], run=False)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


def test_channels_last_hands_the_net_its_images_in_that_format():
    """``channels_last: true`` runs the net in channels-last memory format: its weights and the images its first
    convolution receives (LeNet: 3 channels, where the two formats differ)."""
    seen = []
    model = ImageClassifier(LeNet(), class_names=[str(i) for i in range(10)], channels_last=True)
    model.net.conv1.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    model(torch.randn(4, 3, 32, 32))
    assert seen == [True] and model.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)


class CtrlCAtEpochEnd(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_after_an_epochs_last_batch_saves_though_its_window_is_short(tmp_path):
    """20 batches an epoch in windows of 8: the epoch's end applies its last 4 batches, so a Ctrl-C once they are
    done stops at a window's end, and last.ckpt is written there."""
    torch.manual_seed(0)
    model = Regressor(two_layer_sequential(5, 4, 2), lambda p: torch.optim.SGD(p, lr=1e-3))
    saves = RecordSaves()
    trainer = _quiet_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=8, plugins=[saves],
                             enable_checkpointing=True,
                             callbacks=[CtrlCAtEpochEnd(), ResumeCheckpoint()])
    with pytest.raises((SystemExit, KeyboardInterrupt)):  # Lightning ends an interrupted fit with exit code 1
        trainer.fit(model, RandomTensorDataModule(n=8, d_in=5, d_out=2, steps=20))
    assert saves.positions == [(0, 20)] and trainer.global_step == 3


def test_validation_test_and_predict_batches_are_test_batch_size(tiny_vision_root, trust_cifar_files):
    """README: ``batch_size`` is the training batch, ``test_batch_size`` (pytorch/examples' 1000 for MNIST) every
    evaluation batch; 21 test images at 8 are 8, 8, 5."""
    datamodule = CIFAR10DataModule(str(tiny_vision_root), download=False, batch_size=4, test_batch_size=8, val_size=10)
    datamodule.setup("fit")
    datamodule.setup("test")
    sizes = {name: [len(batch[0]) for batch in getattr(datamodule, f"{name}_dataloader")()]
             for name in ("train", "val", "test", "predict")}
    assert sizes == {"train": [4] * 7 + [2], "val": [8, 2], "test": [8, 8, 5], "predict": [8, 8, 5]}


class InterruptInStep(L.Callback):
    """Ctrl-C in the middle of a training step, before its backward: where a real one lands most often (the
    step is most of an iteration's time), unlike ``conftest.InterruptAt``, which stops between two steps."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.started = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started += 1

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self.started == self.batch:
            raise KeyboardInterrupt


def test_ctrl_c_inside_a_training_step_then_resume_equals_the_uninterrupted_run(tmp_path):
    """README: exact resume after Ctrl-C mid-epoch. Stopped in the 11th batch of the second epoch, before that
    batch's update, the run must resume with that batch, not after it."""
    base = ["fit", "--config", str(CONFIGS / "step6_optim.yaml"), "--data.init_args.steps=30",
            "--trainer.max_epochs=2"]
    assert run_cli([*base, *quiet_trainer_args(tmp_path / "straight")])[0] == 0
    crashed = quiet_trainer_args(tmp_path / "crashed")
    assert run_cli([*base, "--trainer.callbacks+=test_pinned_facts.InterruptInStep", "--trainer.callbacks.batch=41",
                    *crashed])[0] == 1
    assert run_cli([*base, "--ckpt_path", "last", *crashed])[0] == 0
    weights = [torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
               for root in (tmp_path / "straight", tmp_path / "crashed")]
    assert weights[0]["global_step"] == weights[1]["global_step"] == 60
    assert all(torch.equal(weights[0]["state_dict"][k], weights[1]["state_dict"][k]) for k in weights[0]["state_dict"])
