"""Steps 9-10: real torchvision loading on tiny on-disk data, per-class accuracy, figures, predictions, errors."""

import csv
import gzip
import itertools
import re
import shutil
import tarfile
import urllib.error
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

from conftest import CONFIGS, LossRecorder, assert_curves_equal, quiet_trainer_args, run_cli
from formats import write_cifar10, write_mnist
from lit_tutorial.callbacks import PredictionCSVWriter
from lit_tutorial.cli import make_cli
from lit_tutorial.data import CIFAR10DataModule, MNISTDataModule
from lit_tutorial.data.loader import TensorLoader
from lit_tutorial.data.stats import channel_stats
from lit_tutorial.models import ImageClassifier
from lit_tutorial.nets import LeNet, MnistNet
from sources import examples_mnist_train, source_twin, tutorial_cifar10_loop


@pytest.mark.parametrize("config", ["step9_cifar10", "step10_mnist", "step10_digits"])
def test_test_stage_through_cli_writes_table_and_figures(config, tmp_path, vision_data_args, capsys):
    path = CONFIGS / f"{config}.yaml"
    code, _ = run_cli(["test", "--config", str(path), "--trainer.fast_dev_run=true", "--ckpt_path", "initial",
                       *quiet_trainer_args(tmp_path)] + vision_data_args(path))
    assert code == 0
    out = capsys.readouterr().out
    assert "correct/total" in out and "overall" in out
    assert {p.name for p in tmp_path.rglob("*.png")} == {"confusion_matrix.png", "test_samples.png"}


def _trained_digits_checkpoint(tmp_path) -> str:
    code, _ = run_cli(["fit", "--config", str(CONFIGS / "step10_digits.yaml"), "--trainer.max_epochs=1",
                       "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
                       *quiet_trainer_args(tmp_path)])
    assert code == 0
    (best,) = tmp_path.rglob("best-*.ckpt")  # the vision configs also keep the best by val_acc
    return str(tmp_path / "checkpoints" / "last.ckpt")


def test_test_from_checkpoint_in_a_fresh_process_and_predict_csv(fresh_processes, tmp_path):
    checkpoint = _trained_digits_checkpoint(tmp_path / "fit")
    test = ["test", "--config", str(CONFIGS / "step10_digits.yaml"), "--ckpt_path", checkpoint,
            *quiet_trainer_args(tmp_path / "test")]
    assert fresh_processes.run(test) == 0, fresh_processes.output()[-2000:]
    output = fresh_processes.output()
    assert f"Restoring states from the checkpoint path at {checkpoint}" in output and "correct/total" in output

    code, _ = run_cli(["predict", "--config", str(CONFIGS / "step10_digits.yaml"), "--ckpt_path", checkpoint,
                       *quiet_trainer_args(tmp_path / "predict")])
    assert code == 0
    (predictions,) = (tmp_path / "fit" / "checkpoints" / "last-predict").glob("predictions.csv")  # beside the ckpt
    rows = list(csv.DictReader(predictions.open()))
    assert list(rows[0])[:4] == ["index", "label", "predicted", "probability"]  # then the runners-up
    # The index is the image's position in scikit-learn's own load_digits() order, and its label is that one's.
    from sklearn.datasets import load_digits
    targets = load_digits().target
    index = [int(r["index"]) for r in rows]
    assert len(rows) == 360 and len(set(index)) == 360 and max(index) < len(targets) and index != list(range(360))
    assert [r["label"] for r in rows] == [str(targets[i]) for i in index]
    # The top of ten probabilities is at least 1/10 (test_predictions_csv_rows_are_torchvisions_test_images checks
    # each row against the model's own softmax).
    assert all(r["predicted"] in set("0123456789") and 0.1 <= float(r["probability"]) <= 1.0 for r in rows)


@pytest.mark.parametrize(("config", "dataset", "normalize"), [
    ("step9_cifar10", torchvision.datasets.CIFAR10, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),
    ("step10_mnist", torchvision.datasets.MNIST, ((0.1307,), (0.3081,))),
])
def test_predictions_csv_rows_are_torchvisions_test_images(config, dataset, normalize, tiny_vision_root,
                                                            trust_cifar_files, tmp_path):
    """Row by row: ``index`` is the image's position in torchvision's test set, ``label`` its true class, and the
    prediction is the model's on that very image, loaded and normalised by torchvision."""
    cli = make_cli(["--config", str(CONFIGS / f"{config}.yaml"), f"--data.init_args.data_dir={tiny_vision_root}",
                    "--data.init_args.download=false", "--data.init_args.batch_size=8",
                    *quiet_trainer_args(tmp_path)], run=False)
    cli.trainer.predict(cli.model, cli.datamodule)
    (predictions,) = tmp_path.rglob("predictions.csv")
    rows = list(csv.DictReader(predictions.open()))
    reference = dataset(tiny_vision_root, train=False, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(*normalize)]))
    assert sorted(int(r["index"]) for r in rows) == list(range(len(reference))) == list(range(21))
    names = cli.datamodule.class_names
    model = cli.model.eval()
    for row in rows:
        image, label = reference[int(row["index"])]
        with torch.no_grad():
            probability, predicted = F.softmax(model(image[None]), dim=1).max(dim=1)
        assert row["label"] == names[label] and row["predicted"] == names[predicted.item()]
        assert float(row["probability"]) == pytest.approx(probability.item(), abs=2e-6)


class _Rank:
    """The parts of a Trainer a DataModule reads to shard its loaders: one process of two."""

    def __init__(self, rank: int) -> None:
        self.global_rank, self.world_size, self.current_epoch = rank, 2, 0


def test_predict_shards_keep_torchvisions_index(tiny_vision_root, trust_cifar_files):
    """Under DDP each process predicts its share; together they cover every test image once, under its index."""
    original = torchvision.datasets.CIFAR10(tiny_vision_root, train=False)
    seen = []
    for rank in (0, 1):
        datamodule = CIFAR10DataModule(str(tiny_vision_root), download=False, val_size=0, batch_size=4)
        datamodule.trainer = _Rank(rank)
        datamodule.setup("predict")
        for images, labels, index in datamodule.predict_dataloader():
            for image, label, i in zip(images, labels.tolist(), index.tolist(), strict=True):
                assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(original.data[i]))
                assert label == original.targets[i]
                seen.append(i)
    assert sorted(seen) == list(range(21)) and seen[:3] == [0, 2, 4]


def _patterned(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes 0-7 carry a bright band at rows 4k..4k+3; classes 8 and 9 are the same plain noise (twins)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = torch.randint(0, 80, (len(labels), 3, 32, 32), dtype=torch.uint8, generator=generator)
    for i, label in enumerate(labels.tolist()):
        if label < 8:
            images[i, :, 4 * label : 4 * label + 4, :] = 255
    return images, labels


def test_per_class_accuracy_shows_learnable_and_twin_classes(tmp_path, trust_cifar_files):
    write_cifar10(tmp_path / "data", _patterned(40, seed=1), _patterned(15, seed=2))
    torch.manual_seed(0)
    datamodule = CIFAR10DataModule(str(tmp_path / "data"), download=False, batch_size=20, val_size=0)
    model = ImageClassifier(LeNet(), lambda p: torch.optim.Adam(p, lr=3e-3), list(CIFAR10DataModule.class_names))
    trainer = L.Trainer(max_epochs=8, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[PredictionCSVWriter(str(tmp_path))])
    trainer.fit(model, datamodule)
    (results,) = trainer.test(model, datamodule)
    accuracy = {name: results[f"test_acc_{name}"] for name in CIFAR10DataModule.class_names}

    learnable = CIFAR10DataModule.class_names[:8]
    assert all(accuracy[name] >= 0.9 for name in learnable), accuracy
    assert accuracy["ship"] + accuracy["truck"] == pytest.approx(1.0, abs=0.2), accuracy

    # The same numbers, counted by hand from predict's CSV.
    trainer.predict(model, datamodule)
    test_labels = datamodule.split("test")[1].tolist()
    correct, total = Counter(), Counter(test_labels)
    for row in csv.DictReader((tmp_path / "predictions.csv").open()):
        label = test_labels[int(row["index"])]
        correct[label] += row["predicted"] == CIFAR10DataModule.class_names[label]
    for label, name in enumerate(CIFAR10DataModule.class_names):
        assert accuracy[name] == pytest.approx(correct[label] / total[label], abs=1e-6)
    assert results["test_acc"] == pytest.approx(sum(correct.values()) / len(test_labels), abs=1e-6)


def test_auto_normalization_equals_numpy_and_is_cached(tiny_vision_root, trust_cifar_files, tmp_path):
    datamodule = CIFAR10DataModule(str(tiny_vision_root), download=False, val_size=8, mean="auto", std="auto")
    datamodule.setup("fit")
    train_images = datamodule.split("train")[0]
    pixels = train_images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(datamodule.mean, pixels.mean(axis=(0, 2, 3)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(datamodule.std, pixels.std(axis=(0, 2, 3)), rtol=0, atol=1e-6)
    assert len(list(tiny_vision_root.glob("CIFAR10DataModule_stats_*.json"))) == 1
    # Streaming in small chunks gives the same numbers as one pass.
    mean, std = channel_stats(train_images, chunk=3)
    np.testing.assert_allclose(mean, datamodule.mean, atol=1e-12)
    np.testing.assert_allclose(std, datamodule.std, atol=1e-12)


def test_fast_path_equals_totensor_normalize_in_seeded_order(tiny_vision_root, trust_cifar_files):
    datamodule = CIFAR10DataModule(str(tiny_vision_root), download=False, val_size=0, batch_size=4)
    images, labels = datamodule.load(train=True)
    reference = torchvision.datasets.CIFAR10(
        tiny_vision_root, train=True, transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))

    def epoch(seed: int) -> list[int]:
        loader = TensorLoader(images, labels, torch.arange(len(images)), batch_size=4, shuffle=True, seed=seed)
        seen = []
        for batch_images, batch_labels, index in loader:
            expected = torch.stack([reference[i][0] for i in index.tolist()])
            torch.testing.assert_close(datamodule.normalize(batch_images), expected, rtol=0, atol=1e-6)
            assert batch_labels.tolist() == [reference[i][1] for i in index.tolist()]
            seen += index.tolist()
        return seen

    order = epoch(seed=5)
    assert sorted(order) == list(range(40)) and order == epoch(seed=5) and order != epoch(seed=6)


def _fit_args(config: str, data_dir, tmp_path, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONFIGS / f"{config}.yaml"), f"--data.init_args.data_dir={data_dir}",
            "--trainer.fast_dev_run=true", *extra, *quiet_trainer_args(tmp_path)]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("config", "expected"), [
    ("step9_cifar10", ["CIFAR10 not found", "cifar-10-batches-py lacks data_batch_1", "cifar-10-python.tar.gz",
                       "--data.init_args.download=true"]),
    ("step10_mnist", ["MNIST not found", "MNIST/raw lacks train-images-idx3-ubyte", "train-images-idx3-ubyte.gz",
                      "gunzipped", "--data.init_args.download=true"]),
])
def test_missing_files_with_download_false(config, expected, tmp_path, capsys):
    code, err = run_cli(_fit_args(config, tmp_path / "empty", tmp_path, "--data.init_args.download=false"), capsys)
    line = _error_line(err)
    assert code == 2 and all(text in line for text in expected), line
    assert str(tmp_path / "empty") in line and ".." not in line


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize(("config", "url"), [("step9_cifar10", "cifar-10-python.tar.gz"), ("step10_mnist", "mnist/")])
def test_download_without_network(config, url, tmp_path, capsys, no_network):
    code, err = run_cli(_fit_args(config, tmp_path / "data", tmp_path, "--data.init_args.download=true"), capsys)
    line = _error_line(err)
    assert code == 2 and "could not download" in line and url in line and "where there is a network" in line, line
    # The cause is torchvision's, never empty (MNIST's own message ends in a colon before the mirrors' errors).
    assert "(Temporary failure in name resolution" in line or "Errno -3" in line, line
    assert "--data.init_args.download=false" in line and ".." not in line and "()" not in line


def _tiny_dataset_files(config: str, folder) -> None:
    split = (torch.randint(0, 256, (10, 1 if "mnist" in config else 3, 28 if "mnist" in config else 32,
                                    28 if "mnist" in config else 32), dtype=torch.uint8), torch.arange(10))
    (write_mnist if "mnist" in config else write_cifar10)(folder, split, split)


@pytest.mark.parametrize(("config", "layout"), [("step9_cifar10", "archive"), ("step9_cifar10", "extracted"),
                                                ("step10_mnist", "gzipped"), ("step10_mnist", "gunzipped")])
def test_following_the_offline_message_works_first_time(config, layout, tmp_path, capsys, no_network,
                                                        trust_cifar_files):
    """No network: the message names the files and where they go; placing them exactly so makes the same command
    (with or without the download switched off, as the message offers) succeed."""
    args = _fit_args(config, tmp_path / "data", tmp_path / "run", "--data.init_args.val_size=2")
    code, err = run_cli(args, capsys)
    line = _error_line(err)
    assert code == 2
    made = tmp_path / "downloaded_elsewhere"  # the files as torchvision's downloads unpack
    _tiny_dataset_files(config, made)
    if layout == "archive":
        (archive,) = re.findall(r"put it as it is at (\S+/cifar-10-python\.tar\.gz),", line)
        Path(archive).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(made / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    elif layout == "extracted":
        ((folder, batch, last, *others),) = re.findall(
            r"extracted: (\S+)/ holding (\w+)_1 to \2_(\d+), ([\w.]+) and ([\w.]+)", line)
        names = [f"{batch}_{i}" for i in range(1, int(last) + 1)] + others
        Path(folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(made / "cifar-10-batches-py" / name, Path(folder) / name)
    else:
        ((names, folder),) = re.findall(r"fetch (.+?) from \S+ where there is a network and put them in (\S+)/,", line)
        Path(folder).mkdir(parents=True, exist_ok=True)
        for name in names.split(", "):
            source = (made / "MNIST" / "raw" / name).with_suffix("")
            if layout == "gzipped":
                with open(source, "rb") as f, gzip.open(Path(folder) / name, "wb") as out:
                    out.write(f.read())
            else:
                shutil.copy(source, Path(folder) / source.name)
    again = args if layout in ("archive", "gzipped") else [*args, "--data.init_args.download=false"]
    code, err = run_cli(again, capsys)
    assert code == 0, err[-2000:]


@pytest.mark.parametrize("config", ["step9_cifar10", "step10_mnist"])
def test_a_data_dir_that_is_a_file_is_not_blamed_on_the_network(config, tmp_path, capsys, no_network):
    (tmp_path / "data").write_text("not a folder")
    code, err = run_cli(_fit_args(config, tmp_path / "data" / "inner", tmp_path / "run"), capsys)
    line = _error_line(err)
    assert code == 2 and f"because {tmp_path / 'data'} is a file" in line and "download" not in line, line


def test_corrupt_cifar_batch_is_named(trust_cifar_files, tmp_path, capsys):
    data = tmp_path / "data"
    split = (torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10))
    write_cifar10(data, split, split)
    batch = data / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    code, err = run_cli(_fit_args("step9_cifar10", data, tmp_path, "--data.init_args.download=false"), capsys)
    line = _error_line(err)
    assert code == 2 and f"CIFAR10 file {batch} is corrupt or truncated" in line, line


def test_corrupt_mnist_idx_is_named(tmp_path, capsys):
    raw = write_mnist(tmp_path / "data", (torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10)),
                      (torch.zeros(4, 28, 28, dtype=torch.uint8), torch.arange(4)))
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:500])
    code, err = run_cli(_fit_args("step10_mnist", tmp_path / "data", tmp_path, "--data.init_args.download=false"),
                        capsys)
    line = _error_line(err)
    assert code == 2 and f"MNIST file {images} is corrupt or truncated" in line, line


def test_without_md5_check_real_cifar_files_are_rejected_as_corrupt(tiny_vision_root, tmp_path, capsys):
    """Without the test's md5 bypass, hand-made files fail torchvision's checksum: the message names one."""
    code, err = run_cli(_fit_args("step9_cifar10", tiny_vision_root, tmp_path, "--data.init_args.download=false"),
                        capsys)
    assert code == 2 and "is corrupt or truncated" in _error_line(err)


def test_bad_normalization_config(tmp_path, capsys):
    code, err = run_cli(_fit_args("step9_cifar10", tmp_path, tmp_path, "--data.init_args.mean=auto",
                                  "--data.init_args.std=[0.5,0.5,0.5]"), capsys)
    assert code == 2 and "go together" in _error_line(err)


def test_mnist_loads_through_torchvision(tiny_vision_root):
    datamodule = MNISTDataModule(str(tiny_vision_root), download=False, val_size=10)
    datamodule.setup("fit")
    datamodule.setup("test")
    assert datamodule.split("train")[0].shape == (30, 1, 28, 28) and len(datamodule.split("val")[0]) == 10
    assert datamodule.split("test")[0].dtype == torch.uint8 and len(datamodule.split("test")[0]) == 21


@pytest.mark.slow  # a full-length run: `python -m pytest -m slow`
def test_digits_full_run_reaches_97_percent(tmp_path):
    cli = make_cli(["--config", str(CONFIGS / "step10_digits.yaml"), *quiet_trainer_args(tmp_path)], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    (results,) = cli.trainer.test(cli.model, cli.datamodule)
    assert results["test_acc"] >= 0.97


def test_worker_processes_through_cli_and_negative_count_rejected(tmp_path, capsys):
    config = str(CONFIGS / "step10_digits.yaml")
    args = ["fit", "--config", config, "--trainer.fast_dev_run=true", *quiet_trainer_args(tmp_path)]
    assert run_cli([*args, "--data.init_args.num_workers=1"])[0] == 0
    code, err = run_cli([*args, "--data.init_args.num_workers=-1"], capsys)
    assert code == 2 and "data.num_workers must be >= 0, got -1" in _error_line(err)


class StartState(L.Callback):
    """The net's weights and the global RNG state as training starts: the hand loop starts from the same."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.weights = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
        self.rng_state = torch.get_rng_state()


def _fit_tiny(config: str, data_dir, tmp_path, epochs: int, batch_size: int, *extra: str):
    """Fit ``config`` through the CLI on the tiny on-disk data; return the CLI, its per-step losses and a copy of
    its net at the start, with the global RNG set back to its state then."""
    cli = make_cli(["--config", str(CONFIGS / f"{config}.yaml"), f"--data.init_args.data_dir={data_dir}",
                    "--data.init_args.download=false", "--data.init_args.val_size=0",
                    f"--data.init_args.batch_size={batch_size}", f"--trainer.max_epochs={epochs}",
                    "--trainer.accelerator=cpu", *extra, *quiet_trainer_args(tmp_path)], run=False)
    recorder, start = LossRecorder(), StartState()
    cli.trainer.callbacks += [recorder, start]
    cli.trainer.fit(cli.model, cli.datamodule)
    net = source_twin(cli.model.net)  # the source's own net: its layer sizes and dropout rates
    net.load_state_dict(start.weights)
    torch.set_rng_state(start.rng_state)
    return cli, recorder.losses, net


def _same_batches(cli, dataset, epoch: int, batch_size: int) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` giving the project's batches of ``epoch``, in the same order."""
    # The same images in the same order: the training split's rows, shuffled as the project's loader does.
    loader = TensorLoader(torch.arange(len(dataset)), subset=cli.datamodule.splits["train"][2],
                          batch_size=len(dataset), shuffle=True)
    loader.sampler.set_epoch(epoch)
    (order,) = next(iter(loader))
    # A generator of its own: by default a DataLoader draws a seed from the global RNG, shifting dropout.
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(),
                                       generator=torch.Generator())


def test_cifar10_curve_equals_the_tutorial_loop(tiny_vision_root, trust_cifar_files, tmp_path):
    """Step 9 through the CLI: the per-step losses of 5 epochs equal the tutorial's own loop (per-sample
    ToTensor + Normalize, a DataLoader, zero_grad/backward/step) from the same weights and batches."""
    epochs, batch_size = 5, 4
    cli, losses, net = _fit_tiny("step9_cifar10", tiny_vision_root, tmp_path, epochs, batch_size)
    trainset = torchvision.datasets.CIFAR10(tiny_vision_root, train=True, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    batches = itertools.chain.from_iterable(_same_batches(cli, trainset, e, batch_size) for e in range(epochs))
    assert_curves_equal(losses, tutorial_cifar10_loop(net, batches), rtol=1e-5)


def test_mnist_curve_equals_pytorch_examples_with_its_lr_schedule(tiny_vision_root, tmp_path):
    """Step 10 through the CLI: 5 epochs equal pytorch/examples' mnist/main.py loop (model.train(), Adadelta lr
    1.0, nll_loss of log_softmax, StepLR(step_size=1, gamma=0.7) stepped after each epoch) from the same weights,
    batches and RNG state (MnistNet's dropout draws from it). The net runs in pytorch/examples' contiguous layout:
    channels-last rounds differently (1e-7, see the channels-last test), and on these random labels such differences
    grow past 1e-5 within 5 epochs."""
    epochs, batch_size = 5, 4
    cli, losses, model = _fit_tiny("step10_mnist", tiny_vision_root, tmp_path, epochs, batch_size,
                                   "--model.init_args.channels_last=false")
    dataset1 = torchvision.datasets.MNIST(tiny_vision_root, train=True, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]))
    expected = []
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for epoch in range(epochs):
        examples_mnist_train(model, "cpu", _same_batches(cli, dataset1, epoch, batch_size), optimizer, expected)
        scheduler.step()
    assert_curves_equal(losses, expected, rtol=1e-6)
    (lightning_optimizer,) = cli.trainer.optimizers
    assert lightning_optimizer.param_groups[0]["lr"] == pytest.approx(0.7**epochs, rel=1e-12)


def test_mnist_recipe_batches_and_a_bad_scheduler_value(tmp_path, capsys):
    cli = make_cli(["--config", str(CONFIGS / "step10_mnist.yaml")], run=False)
    assert (cli.datamodule.hparams.batch_size, cli.datamodule.test_batch_size) == (64, 1000)
    assert cli.trainer.max_epochs == 14
    code, err = run_cli(["fit", "--config", str(CONFIGS / "step10_digits.yaml"), "--trainer.fast_dev_run=true",
                         "--model.init_args.lr_scheduler=torch.optim.lr_scheduler.CosineAnnealingWarmRestarts",
                         "--model.init_args.lr_scheduler.init_args.T_0=0", *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "model.lr_scheduler: Expected positive integer T_0, but got 0" in _error_line(err)


@pytest.mark.parametrize("net_class, shape", [(LeNet, (16, 3, 32, 32)), (MnistNet, (16, 1, 28, 28))])
def test_nets_equal_their_source_code_bit_for_bit(net_class, shape):
    """LeNet and MnistNet reorder ReLU, pooling and dropout for speed: outputs and gradients stay exactly equal to
    the source's own net (its layer sizes and dropout rates, tests/sources.py) with the same weights."""
    torch.manual_seed(0)
    net, images = net_class().train(), torch.randn(shape)
    images[:, :, :14, :14] = 0.5  # a flat patch: exact ties inside pooling windows, where gradients could diverge
    results = []
    for model in (net, source_twin(net)):
        torch.manual_seed(1)  # the same dropout masks
        outputs = model(images)
        outputs.square().sum().backward()
        results.append([outputs.detach(), *(p.grad for _, p in sorted(model.named_parameters()))])
    assert all(torch.equal(ours, source) for ours, source in zip(*results, strict=True))


@pytest.mark.parametrize("net_class, shape", [(LeNet, (8, 3, 32, 32)), (MnistNet, (8, 1, 28, 28))])
def test_channels_last_runs_the_net_in_that_format_with_the_same_outputs(net_class, shape):
    names = [str(i) for i in range(10)]
    torch.manual_seed(0)
    plain = ImageClassifier(net_class(), class_names=names)
    fast = ImageClassifier(net_class(), class_names=names, channels_last=True)
    fast.net.load_state_dict(plain.net.state_dict())
    images = torch.randn(shape)
    assert fast.net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    outputs = []
    for model in (fast, plain):
        torch.manual_seed(1)  # in training mode: MnistNet's dropout masks must not depend on the memory format
        outputs.append(model.train()(images))
    torch.testing.assert_close(*outputs, rtol=0, atol=1e-6)
