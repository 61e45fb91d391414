"""Using a trained model outside the CLI: ``lit-tutorial export`` (ONNX with the normalisation inside, classes.txt,
a plain state_dict) and ``ImageClassifier.load_from_checkpoint`` in a new process."""

import contextlib
import io
import json
import subprocess
import sys

import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
import torchvision
from fresh_processes import env_with_tests_on_path

from conftest import CONFIGS, quiet_trainer_args, run_cli
from lit_tutorial.models import ImageClassifier
from lit_tutorial.nets import LeNet, MnistNet

TINY_FIT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"]
DIGITS = ["--config", str(CONFIGS / "step10_digits.yaml")]


def _run(args: list[str]) -> str:
    """The CLI in-process; what it printed on stdout. It must succeed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code, _ = run_cli(args)
    assert code == 0, out.getvalue()[-2000:]
    return out.getvalue()


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    """A tiny digits fit (``mean: auto``), its predictions, and its export, which takes the normalisation stored in
    the checkpoint (another one typed on the command line is refused, as for every evaluation)."""
    root = tmp_path_factory.mktemp("digits_export")
    _run(["fit", *DIGITS, *TINY_FIT, *quiet_trainer_args(root)])
    _run(["predict", *DIGITS, "--ckpt_path", "last", *quiet_trainer_args(root)])
    printed = _run(["export", *DIGITS, "--ckpt_path", "last", *quiet_trainer_args(root)])
    checkpoints = root / "checkpoints"
    return {"root": root, "ckpt": checkpoints / "last.ckpt", "out": checkpoints / "last-export", "net": MnistNet,
            "printed": printed, "predictions": checkpoints / "last-predict" / "predictions.csv",
            "data": "DigitsDataModule", "shape": (1, 28, 28)}


@pytest.fixture(scope="module")
def cifar(tiny_vision_root, tmp_path_factory) -> dict:
    """A tiny CIFAR10 fit on the on-disk test data (Normalize 0.5 as the tutorial), exported."""
    root = tmp_path_factory.mktemp("cifar_export")
    config = ["--config", str(CONFIGS / "step9_cifar10.yaml"), f"--data.init_args.data_dir={tiny_vision_root}",
              "--data.init_args.download=false", "--data.init_args.val_size=8"]
    with pytest.MonkeyPatch.context() as patch:  # conftest.trust_cifar_files, for the whole module
        patch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
        _run(["fit", *config, *TINY_FIT, *quiet_trainer_args(root)])
        printed = _run(["export", *config, "--ckpt_path", "best", *quiet_trainer_args(root)])
    (best,) = (root / "checkpoints").glob("best-*.ckpt")
    return {"root": root, "ckpt": best, "out": best.with_name(f"{best.stem}-export"), "net": LeNet,
            "printed": printed, "data": "CIFAR10DataModule", "shape": (3, 32, 32)}


@pytest.fixture(params=["digits", "cifar"])
def exported(request) -> dict:
    return request.getfixturevalue(request.param)


def _reference_probabilities(run: dict, images: torch.Tensor) -> torch.Tensor:
    """The checkpoint's model on uint8 images, normalised with the statistics the checkpoint stores."""
    model = ImageClassifier.load_from_checkpoint(run["ckpt"]).eval()
    stats = torch.load(run["ckpt"], weights_only=True)[run["data"]]
    mean, std = (torch.tensor(stats[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    with torch.no_grad():
        return F.softmax(model(images.float().div(255).sub(mean).div(std)), dim=1)


def test_export_writes_its_three_files_beside_the_checkpoint_and_names_them(exported):
    files = sorted(p.name for p in exported["out"].iterdir())
    assert files == ["classes.txt", "model.onnx", "state_dict.pt"]
    assert all(str(exported["out"] / name) in exported["printed"] for name in files)


@pytest.mark.parametrize("batch", [1, 37])
def test_onnx_gives_the_checkpoints_probabilities_on_uint8_images(exported, batch):
    images = torch.randint(0, 256, (batch, *exported["shape"]), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(batch))
    session = onnxruntime.InferenceSession(str(exported["out"] / "model.onnx"), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.type == "tensor(uint8)" and given.shape[1:] == list(exported["shape"])
    probabilities = torch.from_numpy(session.run(None, {given.name: images.numpy()})[0])
    expected = _reference_probabilities(exported, images)
    assert probabilities.shape == expected.shape == (batch, 10)
    assert (probabilities - expected).abs().max().item() <= 1e-5


def test_class_names_are_in_the_onnx_metadata_and_in_classes_txt(exported):
    names = torch.load(exported["ckpt"], weights_only=True)["hyper_parameters"]["class_names"]
    assert len(names) == 10 and names[0] == ("0" if exported["net"] is MnistNet else "plane")
    metadata = {p.key: p.value for p in onnx.load(str(exported["out"] / "model.onnx")).metadata_props}
    assert json.loads(metadata["class_names"]) == names
    assert (exported["out"] / "classes.txt").read_text().splitlines() == names


def test_the_state_dict_loads_into_the_plain_net_without_lightning(exported):
    state = torch.load(exported["out"] / "state_dict.pt", weights_only=True)
    net = exported["net"]()
    net.load_state_dict(state)  # strict: the same keys, no "net." prefix
    net.eval()
    model = ImageClassifier.load_from_checkpoint(exported["ckpt"]).eval()
    images = torch.randn(5, *exported["shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net(images), model(images), rtol=0, atol=1e-6)


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_exporting_a_damaged_checkpoint_or_a_regression_step_is_one_sentence(digits, tmp_path, capsys):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(digits["ckpt"].read_bytes()[:-1000])
    code, err = run_cli(["export", *DIGITS, "--ckpt_path", str(damaged), *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and f"checkpoint {damaged} is damaged" in _error_line(err)
    assert not (tmp_path / "damaged-export").exists()

    code, err = run_cli(["export", "--config", str(CONFIGS / "step6_optim.yaml"), "--ckpt_path", "last",
                         *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "Regressor has no predict_step" in _error_line(err) and "export an image config" in err

    code, err = run_cli(["export", *DIGITS, "--ckpt_path", "initial", *quiet_trainer_args(digits["root"])], capsys)
    assert code == 2 and "export needs trained weights" in _error_line(err)
    assert not (digits["root"] / "initial-export").exists()


def test_export_without_onnx_installed_says_how_to_install_it(digits, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    code, err = run_cli(["export", *DIGITS, "--ckpt_path", "last", *quiet_trainer_args(digits["root"])], capsys)
    line = _error_line(err)
    assert code == 2 and "onnxruntime is not installed" in line and 'pip install -e ".[export]"' in line
    assert not (digits["root"] / "checkpoints" / "last-export-2").exists()


LOAD = """
import csv, json, sys
import torch
import torch.nn.functional as F
from lit_tutorial.data import DigitsDataModule
from lit_tutorial.models import FromScratchRegressor, ImageClassifier, Regressor

digits, predictions, regressor, from_scratch = sys.argv[1:]
model = ImageClassifier.load_from_checkpoint(digits)
model.eval()
data = DigitsDataModule.load_from_checkpoint(digits)  # with the normalisation the model was trained with
data.setup("predict")
row = next(csv.DictReader(open(predictions)))
position = data.test_index().tolist().index(int(row["index"]))
image = data.normalize(data.split("test")[0][position : position + 1])
with torch.no_grad():
    probability, predicted = F.softmax(model(image), dim=1).max(dim=1)
out = {"row": row, "probability": probability.item(), "predicted": model.hparams.class_names[predicted.item()]}
for cls, path in ((Regressor, regressor), (FromScratchRegressor, from_scratch)):
    loaded = cls.load_from_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    out[cls.__name__] = sorted(saved) == sorted(loaded.state_dict()) and all(
        torch.equal(value, saved[key].to(value.dtype)) for key, value in loaded.state_dict().items())
print(json.dumps(out))
"""


def test_load_from_checkpoint_rebuilds_each_model_in_a_new_process(digits, tmp_path):
    """As in any Lightning project: ``ImageClassifier.load_from_checkpoint(path)`` with nothing else, although the
    CLI built the net from the config; its prediction equals the CLI's in predictions.csv."""
    regressions = {}
    for step in ("step6_optim", "step1_warmup"):
        fit = ["fit", "--config", str(CONFIGS / f"{step}.yaml"), "--data.init_args.steps=3",
               *quiet_trainer_args(tmp_path / step)]
        _run(fit)
        regressions[step] = str(tmp_path / step / "checkpoints" / "last.ckpt")
    # The hyper-parameters saved for load_from_checkpoint are also what a resume reads back (step 6's resume is in
    # tests/test_cli.py).
    _run([*fit, "--trainer.max_epochs=2", "--ckpt_path", "last"])
    assert torch.load(regressions["step1_warmup"], weights_only=True)["global_step"] == 6
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(digits["ckpt"]), str(digits["predictions"]), regressions["step6_optim"],
         regressions["step1_warmup"]], capture_output=True, text=True, env=env_with_tests_on_path(), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["predicted"] == out["row"]["predicted"]
    assert out["probability"] == pytest.approx(float(out["row"]["probability"]), abs=2e-6)
    assert out["Regressor"] and out["FromScratchRegressor"]
