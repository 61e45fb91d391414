"""The ``python -m lit_tutorial`` command line: LightningCLI with the model and data picked by ``class_path``."""

import os
import re
import signal
import sys
from typing import NoReturn

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_tutorial.checkpointing import ResumeCheckpoint, resolve_checkpoint
from lit_tutorial.errors import UserError

# jsonargparse explains a bad value against every member of ``Union[Class, None]``; these lines are that noise.
_NOISE = re.compile(
    r"Does not validate against any of the Union subtypes|^Subtypes:|^Errors:|Expected a <class 'NoneType'>"
    r"|^Given value( type)?:"
)


def _one_sentence(message: str) -> str:
    lines = [line.strip(" -") for line in str(message).splitlines()]
    return " ".join(line for line in lines if line and not _NOISE.search(line))


class ShortErrorParser(LightningArgumentParser):
    """Reports a config error as one line instead of the usage screen."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        _exit_with(f"{_one_sentence(message)}. Run with --help to see the accepted keys and types.")


class LitTutorialCLI(LightningCLI):
    """LightningCLI that links class names, checks the accelerator and resolves ``--ckpt_path last``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The DataModule's class names go to the model, so they are never typed twice.
        parser.link_arguments(
            "data", "model.init_args.class_names", compute_fn=_class_names_of, apply_on="instantiate"
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self.trainer_defaults["callbacks"] = _default_callbacks(config.trainer)
        accelerator = str(config.trainer.accelerator)
        cuda = torch.cuda.is_available()
        if not cuda:
            _plain_cuda_check()
        has_gpu = cuda or (accelerator == "gpu" and torch.backends.mps.is_available())
        if accelerator in ("gpu", "cuda") and not has_gpu:
            raise UserError(
                f"trainer.accelerator is {accelerator} but this machine has no usable GPU; drop the GPU "
                "overlay (configs/overlays/gpu.yaml) or pass --trainer.accelerator=cpu."
            )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # Before LightningCLI itself opens the checkpoint: ``last`` becomes a path, and a bad file is explained.
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path"):
            config = self.config[subcommand]
            root = config.trainer.default_root_dir or os.getcwd()
            config.ckpt_path = resolve_checkpoint(config.ckpt_path, root)


def _default_callbacks(trainer: Namespace) -> list[L.Callback]:
    """Resumable checkpoints, and a progress bar that redraws every 10 steps instead of every step.

    Each is left out where the user switched that feature off or configured their own.
    """
    own = " ".join(str(c.get("class_path", c)) for c in (trainer.callbacks or []) if c is not None)
    callbacks: list[L.Callback] = []
    if trainer.enable_checkpointing is not False:
        callbacks.append(ResumeCheckpoint())
    if trainer.enable_progress_bar is not False and "ProgressBar" not in own:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    return callbacks


def _plain_cuda_check() -> None:
    """On a machine without a CUDA GPU, let ``torch.cuda.is_available()`` answer from its cached result again.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so that looking for GPUs never initialises CUDA in
    a process that may fork. Without a GPU there is nothing to protect, and each check then retries loading NVML
    (about 40 us here): torch's Adam and Adadelta check on every step, doubling Adam's step on the regression nets.
    """
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def _class_names_of(datamodule: L.LightningDataModule) -> list[str] | None:
    """The regression DataModules have no classes; their models take no ``class_names``."""
    names = getattr(datamodule, "class_names", None)
    return list(names) if names else None


def _exit_with(message: str) -> NoReturn:
    print(f"lit_tutorial: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _user_error_in(error: BaseException) -> UserError | None:
    """The UserError behind ``error``, which jsonargparse may have wrapped while instantiating classes."""
    seen = error
    while seen is not None:
        if isinstance(seen, UserError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def make_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """The project's LightningCLI; with ``run=False`` it only builds the model, data and trainer."""
    return LitTutorialCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"deterministic": True},
        auto_configure_optimizers=False,
        parser_class=ShortErrorParser,
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run ``fit``/``validate``/``test``/``predict``; a user error ends as one sentence on stderr and exit code 2."""
    try:
        make_cli(args)
    except SIGTERMException:
        print("lit_tutorial: stopped by SIGTERM; last.ckpt holds the state at that step: rerun the same command "
              "with --ckpt_path last to continue.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as error:
        if (user_error := _user_error_in(error)) is None:
            raise
        _exit_with(str(user_error))
