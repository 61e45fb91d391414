"""``lit-tutorial export``: a trained image classifier as files that run without this project.

Written into the checkpoint's evaluation folder (``<checkpoint>-export/``):

- ``model.onnx``: uint8 images ``(N, C, H, W)`` in (any N), class probabilities ``(N, classes)`` out. The
  normalisation the model was trained with (the ``mean``/``std`` stored in the checkpoint, also when training used
  ``mean: auto``) and the softmax are inside the graph, so a caller feeds raw pixels. The class names are in the
  file's metadata (``class_names``, a JSON list) and in ``classes.txt`` beside it, one a line, in class order.
- ``state_dict.pt``: the plain net's ``state_dict`` (keys as ``LeNet()``/``MnistNet()`` name them, without the
  LightningModule's ``net.`` prefix): ``net.load_state_dict(torch.load(path))`` without Lightning.

ONNX needs the optional packages ``onnx``, ``onnxscript`` and ``onnxruntime`` (``pip install -e ".[export]"``).
"""

import copy
import json
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lit_tutorial.errors import UserError
from lit_tutorial.files import atomic_write

#: The subcommand and the arguments of :meth:`ExportingTrainer.export` that LightningCLI fills itself.
SUBCOMMANDS = {"export": {"model", "datamodule"}}
#: An exported model must give the checkpoint's own probabilities on the test images to this tolerance.
TOLERANCE = 1e-5


class ExportingTrainer(L.Trainer):
    """Lightning's Trainer plus the ``export`` subcommand: LightningCLI builds a subcommand's options from the
    Trainer method of the same name and calls it with the model and the DataModule of the config."""

    def export(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None,
               ckpt_path: str | None = None) -> list[Path]:
        """Export a checkpoint of an image config: model.onnx (uint8 images in, probabilities out), classes.txt and
        the plain net's state_dict.pt, beside the checkpoint.

        Args:
            model: The config's model; the checkpoint's weights are loaded into it.
            datamodule: The config's DataModule: the image size and the test images the export is checked on.
            ckpt_path: The checkpoint: ``last``, ``best`` or a ``.ckpt`` file.
        """
        return export_checkpoint(model, datamodule, ckpt_path, Path(self.log_dir or self.default_root_dir))


class UInt8Classifier(nn.Module):
    """``net`` behind the training's ``ToTensor`` + ``Normalize`` and followed by a softmax: what is exported."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The same operations, in the same order, as ImageDataModule.normalize: the same numbers.
        return F.softmax(self.net(images.float().div(255).sub(self.mean).div(self.std)), dim=1)


def export_checkpoint(model: L.LightningModule, datamodule: L.LightningDataModule | None, ckpt_path: str | None,
                      out: Path) -> list[Path]:
    """Write model.onnx, classes.txt and state_dict.pt for ``ckpt_path`` into ``out``; return their paths."""
    if ckpt_path is None:
        raise UserError("export needs trained weights: pass --ckpt_path last, best or a .ckpt file.")
    onnx, onnxruntime = _onnx_packages()
    if datamodule is None or not hasattr(datamodule, "normalize") or not hasattr(model, "net"):
        raise UserError("export takes an image config (step9_*, step10_*): its model's net and its DataModule's "
                        "normalisation are what is exported.")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    # The DataModule's state in the checkpoint holds the normalisation the weights were trained with.
    state = checkpoint.get(type(datamodule).__qualname__)
    if state is not None:
        datamodule.load_state_dict(state)
    datamodule.setup("test")
    images = next(iter(datamodule.test_dataloader()))[0]
    with torch.no_grad():  # what the exported model must give on these images
        expected = F.softmax(model(datamodule.normalize(images)), dim=1)
    mean, std = [float(v) for v in datamodule.mean], [float(v) for v in datamodule.std]
    names = list(model.hparams.class_names)

    net = copy.deepcopy(model.net).to(memory_format=torch.contiguous_format).eval()
    proto = to_onnx(UInt8Classifier(net, mean, std).eval(), images[:1])
    onnx.helper.set_model_props(proto, {
        "class_names": json.dumps(names),
        "input": "uint8 images (N, C, H, W), pixel values 0-255",
        "output": "class probabilities (N, classes), in the order of class_names",
        "normalization": json.dumps({"mean": mean, "std": std}),
    })
    exported = proto.SerializeToString()
    _check_same_probabilities(exported, onnxruntime, images, expected)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("model.onnx", "classes.txt", "state_dict.pt")}
    with atomic_write(paths["model.onnx"]) as f:
        f.write(exported)
    with atomic_write(paths["classes.txt"], "w") as f:
        f.write("".join(f"{name}\n" for name in names))
    with atomic_write(paths["state_dict.pt"]) as f:
        torch.save(net.state_dict(), f)
    return list(paths.values())


def to_onnx(classifier: nn.Module, image: torch.Tensor):
    """``classifier`` as an ONNX ``ModelProto`` taking uint8 images shaped like ``image`` (1, C, H, W), any batch."""
    # torch 2.14's default ONNX exporter (dynamo=True, through torch.export): the TorchScript-based one
    # (dynamo=False) is deprecated and warns on every call. Traced at batch 2: batch sizes 0 and 1 would be fixed
    # into the graph, any other size stays dynamic. optimize=False: onnxruntime optimises the graph itself when it
    # loads it, and torch's own pass would double the export's time for a graph a few nodes smaller.
    program = torch.onnx.export(
        classifier, (image.repeat(2, 1, 1, 1),), dynamo=True, optimize=False, verbose=False,
        input_names=["images"], output_names=["probabilities"], dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    return program.model_proto


def _check_same_probabilities(exported: bytes, onnxruntime, images: torch.Tensor, expected: torch.Tensor) -> None:
    """The exported model must give the checkpoint's own probabilities on a batch of test images; a bug otherwise."""
    session = onnxruntime.InferenceSession(exported, providers=["CPUExecutionProvider"])
    given = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    difference = (given - expected).abs().max().item()
    if not difference <= TOLERANCE:
        raise RuntimeError(f"the exported model's probabilities are up to {difference:.2e} away from the checkpoint's")


def _onnx_packages():
    """``onnx`` and ``onnxruntime`` (``torch.onnx.export`` also imports ``onnxscript``), or one sentence on how
    to install them: they are an optional extra."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as error:
        raise UserError(f"export writes ONNX, which needs the onnx, onnxscript and onnxruntime packages ({error.name} "
                        'is not installed): pip install -e ".[export]", then run the same command again.') from None
    return onnx, onnxruntime
