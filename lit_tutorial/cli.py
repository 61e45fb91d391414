"""The ``lit-tutorial`` command (also ``python -m lit_tutorial``): LightningCLI with the model and data picked by
``class_path``."""

import os
import re
import signal
import sys
from pathlib import Path
from typing import NoReturn

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_tutorial.callbacks import TidyProgressBar
from lit_tutorial.checkpointing import ResumeCheckpoint, resolve_checkpoint
from lit_tutorial.errors import UserError

DESCRIPTION = (
    "lit_tutorial: the 'Learning PyTorch with Examples' tutorial rebuilt with PyTorch Lightning, one config per "
    "step. Subcommands: fit (train), validate, test (per-class accuracy and figures; image steps), predict "
    "(predictions.csv; image steps)."
)
EPILOG = (
    "Pass a step config from configs/, e.g. lit-tutorial fit --config configs/step6_optim.yaml; stack overlays from "
    "configs/overlays/ after it. --ckpt_path last (or best) continues or evaluates the run's saved checkpoint. "
    "lit-tutorial <subcommand> --help lists every key."
)

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

    # The command line being parsed, set by LitTutorialCLI: a missing model is explained by the configs given.
    given_args: list[str] | None = None

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        missing = re.search(r"arguments are required: (\w+)\.(data|model)\b", message)
        if missing and self.given_args is not None:
            _exit_with(_no_step_config(missing.group(1), self.given_args))
        _exit_with(_sentence(_one_sentence(message), "Run with --help to see the accepted keys and types."))


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
        parser.given_args = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else None
        super().parse_arguments(parser, args)
        if self.config.get("subcommand"):
            _fill_logger_dirs(self.config[self.config.subcommand].trainer)
        elif "trainer" in self.config:
            _fill_logger_dirs(self.config.trainer)
        # Before LightningCLI itself opens the checkpoint: ``last`` becomes a path, and a bad file is explained.
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path"):
            config = self.config[subcommand]
            root = config.trainer.default_root_dir or os.getcwd()
            config.ckpt_path = resolve_checkpoint(config.ckpt_path, root)

    def after_instantiate_classes(self) -> None:
        if self.subcommand:
            _require_step(self.subcommand, self.model)


def _default_callbacks(trainer: Namespace) -> list[L.Callback]:
    """Resumable checkpoints, and a progress bar that redraws every 10 steps instead of every step.

    Each is left out where the user switched that feature off or configured their own.
    """
    own = " ".join(str(c.get("class_path", c)) for c in (trainer.callbacks or []) if c is not None)
    callbacks: list[L.Callback] = []
    if trainer.enable_checkpointing is not False:
        callbacks.append(ResumeCheckpoint())
    if trainer.enable_progress_bar is not False and "ProgressBar" not in own:
        callbacks.append(TidyProgressBar(refresh_rate=10))
    return callbacks


# Where a logger writes unless told: the run's folder (Lightning's own default logger does the same). A placeholder
# at parse time, because ``trainer.default_root_dir`` may be set after the logger on the command line; a logger
# picked with ``--trainer.logger=CSVLogger`` keeps it, so it needs no ``save_dir`` of its own.
RUN_DIR = "<trainer.default_root_dir>"
# TensorBoard, without the ``hp_metric = -1`` it logs by default when no metric is named as the run's result.
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": RUN_DIR, "default_hp_metric": False},
}


def _fill_logger_dirs(trainer: Namespace) -> None:
    """Put the run's folder where a logger's ``save_dir`` is still the :data:`RUN_DIR` placeholder."""
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and logger.get("init_args.save_dir") == RUN_DIR:
            logger.init_args.save_dir = trainer.default_root_dir or os.getcwd()


def _no_step_config(subcommand: str, args: list[str]) -> str:
    """Why no model or data was given, as one sentence: no config at all, or only overlays."""
    configs = [value for flag, value in zip(args, args[1:], strict=False) if flag in ("-c", "--config")]
    configs += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    example = f"lit-tutorial {subcommand} --config configs/step6_optim.yaml"
    if configs and not any(_has_model(path) for path in configs):
        return (f"{configs[-1]} is an overlay: stack it after a step config, e.g. {example} --config "
                f"{configs[-1]}.")
    return f"{subcommand} needs a step config: pass one of configs/, e.g. {example}."


def _has_model(config: str) -> bool:
    try:
        content = yaml.safe_load(Path(config).read_text())
    except (OSError, yaml.YAMLError):
        return True  # not ours to judge: the parser names an unreadable file itself
    return isinstance(content, dict) and "model" in content


# The step each subcommand runs, and LightningModule's own (empty or generic) version of it.
_STEPS = {"validate": "validation_step", "test": "test_step", "predict": "predict_step"}


def _require_step(subcommand: str, model: L.LightningModule) -> None:
    """``validate``, ``test`` or ``predict`` on a model that only trains (steps 1-8) is a user error, not a crash."""
    step = _STEPS.get(subcommand)
    if step and getattr(type(model), step) is getattr(L.LightningModule, step):
        raise UserError(
            f"{type(model).__name__} has no {step} (the regression steps 1-8 only train), so there is nothing to "
            f"{subcommand}: run fit with this config, or {subcommand} an image config (step9_*, step10_*)."
        )


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


def _sentence(message: str, then: str) -> str:
    """``message`` then ``then``, with one period between them however ``message`` ends."""
    return f"{message.rstrip().rstrip('.')}. {then}"


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


def _missing_package_in(error: BaseException) -> UserError | None:
    """A class picked in the config (e.g. ``--trainer.logger=WandbLogger``) whose package is not installed."""
    chain, seen = [], error
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    missing = next((e for e in chain if isinstance(e, ImportError)), None)
    named = next((m for e in chain if (m := re.search(r"given class_path '([\w.]+)'", str(e)))), None)
    if missing is None or named is None:  # an import failing anywhere else is a bug, not the user's choice
        return None
    what = named.group(1).rsplit(".", 1)[-1]
    reason = re.sub(r"\.?\s*HINT: Try running", "; install it with", str(missing).strip())
    return UserError(f"{what} needs a package that is not installed: {reason}, then run again.")


def make_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """The project's LightningCLI; with ``run=False`` it only builds the model, data and trainer."""
    return LitTutorialCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"deterministic": True, "logger": DEFAULT_LOGGER},
        parser_kwargs={"prog": "lit-tutorial", "description": DESCRIPTION, "epilog": EPILOG},
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
        if (user_error := _user_error_in(error) or _missing_package_in(error)) is None:
            raise
        _exit_with(str(user_error))
