"""The ``lit-tutorial`` command (also ``python -m lit_tutorial``): LightningCLI with the model and data picked by
``class_path``.

Besides running the subcommand it keeps each run's folder predictable and safe (``checkpointing.py`` has the
layout): ``fit`` refuses a folder that holds another run, ``--ckpt_path`` accepts ``last`` and ``best`` and is
checked before anything runs, evaluations need a checkpoint, and the last lines printed name every file written.
"""

import importlib
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lit_tutorial.callbacks import TidyProgressBar
from lit_tutorial.checkpointing import (
    HPC_CHECKPOINTS,
    TRAINER_SETTINGS,
    AtomicCheckpointIO,
    ResumeCheckpoint,
    check_same_settings,
    checkpoint_dir,
    flat_settings,
    newest_checkpoint,
    resolve_checkpoint,
)
from lit_tutorial.errors import UserError, require_positive
from lit_tutorial.launch import RequeueAtStepEnd, SharedRunFolder, check_launch

EVALUATIONS = ("validate", "test", "predict")
DESCRIPTION = (
    "lit_tutorial: the 'Learning PyTorch with Examples' tutorial rebuilt with PyTorch Lightning, one config per "
    "step. Subcommands: fit (train), validate, test (per-class accuracy and figures; image steps), predict "
    "(predictions.csv; image steps)."
)
EPILOG = (
    "Pass a step config from configs/, e.g. lit-tutorial fit --config configs/step6_optim.yaml; stack overlays from "
    "configs/overlays/ after it. --ckpt_path last (or best) continues or evaluates the run's saved checkpoint; "
    "fit --ckpt_path auto continues the run if the folder holds one and starts it otherwise (for job scripts); "
    "evaluating the untrained weights takes --ckpt_path initial; fit --overwrite replaces an earlier run in the "
    "same folder. lit-tutorial <subcommand> --help lists every key."
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
    """LightningCLI that links class names, checks the accelerator, and guards the run folder and checkpoints."""

    def __init__(self, *args, record: "RunRecord | None" = None, **kwargs) -> None:
        self.record = record if record is not None else RunRecord()
        self.started = time.time()
        command_line = sys.argv[1:] if kwargs.get("args") is None else kwargs["args"]
        self._named = command_line[0] if isinstance(command_line, list) and command_line else None
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """The subcommand the command line starts with, or all four when it names none (``--help``, a typo).

        LightningCLI builds a parser for every subcommand it is given, about 0.1 s each, and a command runs one.
        """
        every = LightningCLI.subcommands()
        return {self._named: every[self._named]} if self._named in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The DataModule's class names go to the model, so they are never typed twice.
        parser.link_arguments(
            "data", "model.init_args.class_names", compute_fn=_class_names_of, apply_on="instantiate"
        )
        parser.add_argument(
            "--overwrite", type=bool, default=False,
            help="fit only: start afresh in a default_root_dir that holds another run, deleting its checkpoints "
                 "and logs first.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        parser.given_args = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else None
        super().parse_arguments(parser, args)
        # Runs before LightningCLI itself opens the checkpoint and copies the model's saved hyper-parameters over
        # the config (its ``_parse_ckpt_path``): what the user typed is checked against the checkpoint first, so
        # that copy changes nothing. ``test_checkpoint_never_overrides_the_command_line`` guards that order.
        subcommand = self.config.get("subcommand")
        # Built with run=False, the caller runs ``trainer.fit`` itself: the folder is set up as for fit.
        config = self.config[subcommand] if subcommand else self.config
        self._check_run_folder(subcommand or "fit", config)
        _fill_logger_dirs(config.trainer, self.out)

    def _check_run_folder(self, subcommand: str, config: Namespace) -> None:
        root = Path(config.trainer.default_root_dir or os.getcwd())
        config.trainer.default_root_dir = str(root)
        if root.exists() and not root.is_dir():
            raise UserError(f"trainer.default_root_dir {root} is a file; give a folder for the run.")
        require_positive("trainer.accumulate_grad_batches", config.trainer.accumulate_grad_batches)
        _require_step(subcommand, config.model.class_path)
        check_launch(config.trainer)
        if config.get("ckpt_path") == "auto":  # one job script line for the first start and every requeue
            newest = newest_checkpoint(root)
            config.ckpt_path = str(newest) if newest else None
        ckpt_path = config.get("ckpt_path")
        if subcommand in EVALUATIONS and ckpt_path is None:
            raise UserError(
                f"{subcommand} needs trained weights: pass --ckpt_path last, best, auto or a .ckpt file (or "
                "--ckpt_path initial to score the untrained initial weights on purpose)."
            )
        settings = run_settings(config)
        if ckpt_path == "initial" and subcommand in EVALUATIONS:
            config.ckpt_path, out = None, root / f"initial-{subcommand}"
        elif ckpt_path:
            path, checkpoint = resolve_checkpoint(ckpt_path, root)
            if subcommand == "fit":
                check_same_settings(path, checkpoint, settings, "resume from")
            else:  # an evaluation may use other data, but not another model
                model_only = {k: v for k, v in settings.items() if k.startswith("model.")}
                check_same_settings(path, checkpoint, model_only, subcommand)
            config.ckpt_path = str(path)
            out = path.parent / f"{path.stem}-{subcommand}"
        elif not config.trainer.fast_dev_run and _holds_a_run(root):
            if not config.overwrite:
                raise UserError(
                    f"{root} holds the checkpoints of an earlier run; continue it with --ckpt_path last (or auto), "
                    "give this run another --trainer.default_root_dir, or pass --overwrite to delete that run's "
                    "checkpoints and logs first."
                )
            if _is_launching_process():
                for old in (checkpoint_dir(root), root / "logs"):
                    shutil.rmtree(old, ignore_errors=True)
                for old in root.glob(HPC_CHECKPOINTS):  # Lightning would resume from them under SLURM
                    old.unlink()
        if subcommand == "fit":
            out = root / "logs"
        elif _is_launching_process():  # each evaluation its own folder: another's outputs are never replaced
            out = _first_free(out)
        self.settings, self.out = settings, out
        if not _is_launching_process():
            return  # DDP's extra processes write nothing of their own; rank 0's folder is broadcast to them
        self.record.folders += [d for d in (root, out) if not d.exists()]
        try:  # made now, so a folder that cannot be written is reported before anything runs
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {out} ({error.strerror}); give a --trainer.default_root_dir that you "
                            "can write to.") from None

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
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

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The config's trainer, plus the project's defaults where the user set nothing of their own: resumable
        checkpoints, atomic writes, a progress bar that redraws every 10 steps, and TensorBoard in the run folder."""
        trainer = (self.config_init[self.subcommand] if self.subcommand else self.config_init)["trainer"]
        root = Path(trainer["default_root_dir"])
        callbacks = list(trainer.get("callbacks") or [])
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = os.path.realpath(checkpoint_dir(root))  # beside last.ckpt, where ``best`` looks
        callbacks += [SharedRunFolder(), RequeueAtStepEnd()]
        if trainer.get("enable_checkpointing") is not False:
            callbacks.append(ResumeCheckpoint(settings=self.settings))
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(TidyProgressBar(refresh_rate=10))
        plugins = trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        logger = trainer.get("logger")
        if logger is None or logger is True:
            logger = TensorBoardLogger(save_dir=self.out.parent, name="", version=self.out.name,
                                       default_hp_metric=False)
        trainer = super().instantiate_trainer(callbacks=callbacks, plugins=plugins, logger=logger, **kwargs)
        self.record.trainer = trainer
        return trainer

    def after_fit(self) -> None:
        self._print_written(checkpoint_dir(self.trainer.default_root_dir), self.out)

    def after_validate(self) -> None:
        self._print_written(self.out)

    after_test = after_predict = after_validate

    def _print_written(self, *folders: Path) -> None:
        """The last lines of a command: every file it wrote, so none has to be searched for."""
        if not self.trainer.is_global_zero:
            return
        written = sorted(p for folder in folders if Path(folder).is_dir() for p in Path(folder).rglob("*")
                         if p.is_file() and p.stat().st_mtime >= self.started - 1 and not p.name.endswith(".tmp"))
        if written:
            print("\nlit_tutorial: wrote\n" + "\n".join(f"  {p}" for p in written))


# Where a logger writes unless told: the run's folder (``logs/`` for fit, the evaluation's folder otherwise). A
# placeholder at parse time, filled once the folder is known; a logger picked with ``--trainer.logger=CSVLogger``
# keeps it, so it needs no ``save_dir`` of its own.
RUN_DIR = "<trainer.default_root_dir>"
# TensorBoard, without the ``hp_metric = -1`` it logs by default when no metric is named as the run's result.
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": RUN_DIR, "default_hp_metric": False},
}


def _fill_logger_dirs(trainer: Namespace, out: Path) -> None:
    """Point every logger whose ``save_dir`` is still :data:`RUN_DIR` at ``out`` itself (no version folders)."""
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and logger.get("init_args.save_dir") == RUN_DIR:
            logger.init_args.save_dir = str(out.parent)
            if logger.class_path.rsplit(".", 1)[-1] in ("TensorBoardLogger", "CSVLogger"):
                logger.init_args.name, logger.init_args.version = "", out.name


def _no_step_config(subcommand: str, args: list[str]) -> str:
    """Why no model or data was given, as one sentence: no config at all, or only overlays."""
    configs = _config_paths(args)
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


def _require_step(subcommand: str, class_path: str) -> None:
    """``validate``, ``test`` or ``predict`` on a model that only trains (steps 1-8) is a user error, not a crash."""
    step = _STEPS.get(subcommand)
    module, name = class_path.rsplit(".", 1)
    model = getattr(importlib.import_module(module), name)
    if step and getattr(model, step) is getattr(L.LightningModule, step):
        raise UserError(
            f"{name} has no {step} (the regression steps 1-8 only train), so there is nothing to "
            f"{subcommand}: run fit with this config, or {subcommand} an image config (step9_*, step10_*)."
        )


def run_settings(config: Namespace) -> dict:
    """What a checkpoint records of the run that wrote it: the model, the data and the trainer's numerics."""
    settings = {**flat_settings(_plain(config.model), "model."), **flat_settings(_plain(config.data), "data.")}
    settings.update({f"trainer.{key}": _plain(config.trainer.get(key)) for key in TRAINER_SETTINGS})
    return settings


def _plain(value):
    """A config value as JSON-able dicts, lists and scalars."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _holds_a_run(root: Path) -> bool:
    folder = checkpoint_dir(root)
    return folder.is_dir() and any(folder.glob("*.ckpt")) or any(root.glob(HPC_CHECKPOINTS))


def _is_launching_process() -> bool:
    """True in the process a user started; false in the extra processes DDP launches (they see the same files)."""
    return all(os.environ.get(var, "0") == "0" for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def _first_free(path: Path) -> Path:
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}-{n}"), n + 1
    return candidate


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
    """The user's mistake behind ``error`` as one sentence: our own UserError, a Trainer setting Lightning rejects,
    or a package that a class or option chosen in the config needs; jsonargparse may have wrapped it while
    instantiating classes. Anything else is a bug and keeps its traceback."""
    chain, seen = [], error
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    # jsonargparse names the class it failed to build (e.g. ``--trainer.logger=WandbLogger``).
    named = next((m for e in chain if (m := re.search(r"given class_path '([\w.]+)'", str(e)))), None)
    for seen in chain:
        if isinstance(seen, UserError):
            return seen
        if isinstance(seen, MisconfigurationException):
            return UserError(f"trainer: {_one_sentence(seen).rstrip('.')}; fix that setting in the config.")
        if isinstance(seen, ImportError) and named is not None:
            what = named.group(1).rsplit(".", 1)[-1]
            reason = re.sub(r"\.?\s*HINT: Try running", "; install it with", str(seen).strip())
            return UserError(f"{what} needs a package that is not installed: {reason}, then run again.")
        if isinstance(seen, ModuleNotFoundError):  # e.g. an accelerator whose package is missing
            return UserError(f"an option in the config needs a package this environment lacks "
                             f"({_one_sentence(seen).rstrip('.')}); install it, or drop that option.")
    return None


def _config_paths(args: list[str]) -> list[str]:
    """The files given with ``--config``/``-c`` on a command line, in order."""
    paths = [value for flag, value in zip(args, args[1:], strict=False) if flag in ("-c", "--config")]
    return paths + [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]


def _check_config_files(args: list[str]) -> None:
    """An empty or malformed YAML file, named with its line, before jsonargparse reports it without the file."""
    for path in map(Path, _config_paths(args)):
        if not path.is_file():
            continue  # jsonargparse names a missing file itself
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "unreadable"
            raise UserError(f"config file {path} is not valid YAML{where} ({problem}); fix it there.") from None
        if not isinstance(content, dict):
            raise UserError(f"config file {path} holds no settings; pass one of the step configs in configs/.")


@dataclass
class RunRecord:
    """What a command made, for :func:`main` to undo if it fails before any weight was trained: then its new
    folders hold only what a failed start wrote; once an optimizer step has run, its logs are the user's."""

    folders: list[Path] = field(default_factory=list)
    trainer: L.Trainer | None = None

    def undo(self) -> None:
        if self.trainer is None or self.trainer.global_step == 0:
            for folder in reversed(self.folders):
                shutil.rmtree(folder, ignore_errors=True)


def make_cli(args: list[str] | None = None, run: bool = True, record: RunRecord | None = None) -> LightningCLI:
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
        record=record,
    )


def main(args: list[str] | None = None) -> None:
    """Run ``fit``/``validate``/``test``/``predict``; a user error ends as one sentence on stderr and exit code 2,
    and the folders the command made are removed again if it failed before any optimizer step."""
    record = RunRecord()
    try:
        _check_config_files(sys.argv[1:] if args is None else args)
        make_cli(args, record=record)
    except SIGTERMException:
        print("\nlit_tutorial: stopped by SIGTERM; last.ckpt holds the state at that step: rerun the same command "
              "with --ckpt_path last to continue.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as error:
        user_error = _user_error_in(error)
        if user_error is not None and _is_launching_process():
            record.undo()
        if user_error is None:
            raise
        _exit_with(str(user_error))
