"""The ``lit-tutorial`` command (also ``python -m lit_tutorial``): LightningCLI with the model and data picked by
``class_path`` in a step config.

What the project adds to LightningCLI lives beside it, one job per module: ``run_folder.py`` decides where a
command writes and whether it may (``--overwrite``, ``--ckpt_path last|best|auto``), taking ``lock.py``'s lock
first; ``settings.py`` is what a checkpoint records of its run; ``checkpointing.py`` how runs are saved;
``logs.py`` where its loggers write; ``launch.py`` checks a launch (devices, nodes, SLURM) before Lightning starts;
``export.py`` is the ``export`` subcommand; ``errors.py`` turns a user's mistake into one sentence with exit code 2,
and ``console.py`` keeps the help and the output readable.
"""

import os
import signal
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_tutorial import logs, run_folder
from lit_tutorial.callbacks import StopOnSigterm, TidyProgressBar
from lit_tutorial.checkpointing import AtomicCheckpointIO, ResumeCheckpoint, checkpoint_dir
from lit_tutorial.console import DESCRIPTION, EPILOG, describe_subcommands, quiet_known_noise
from lit_tutorial.errors import (
    ShortErrorParser,
    check_config_files,
    check_run_values,
    exit_with,
    require_positive,
    trainer_settings,
    user_error_in,
)
from lit_tutorial.export import SUBCOMMANDS as EXPORT_SUBCOMMANDS
from lit_tutorial.export import ExportingTrainer
from lit_tutorial.launch import RequeueAtStepEnd, SharedRunFolder, check_accelerator, check_launch
from lit_tutorial.models.base import require_step
from lit_tutorial.settings import run_settings


class LitTutorialCLI(LightningCLI):
    """LightningCLI that links class names, checks the accelerator, and hands the run folder to ``run_folder``."""

    def __init__(self, *args, record: run_folder.CommandRecord | None = None, **kwargs) -> None:
        self.record = record if record is not None else run_folder.CommandRecord()
        self.started = time.time()
        command_line = sys.argv[1:] if kwargs.get("args") is None else kwargs["args"]
        self._named = command_line[0] if isinstance(command_line, list) and command_line else None
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """The subcommand the command line starts with, or all of them when it names none (``--help``, a typo): a
        parser is built for every subcommand listed, and a command runs one."""
        every = {**LightningCLI.subcommands(), **EXPORT_SUBCOMMANDS}
        return {self._named: every[self._named]} if self._named in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The DataModule's class names go to the model, so they are never typed twice.
        parser.link_arguments("data", "model.init_args.class_names", compute_fn=_class_names_of,
                              apply_on="instantiate")
        parser.add_argument("--overwrite", type=bool, nargs="?", const=True, default=False,
                            help="fit only: start afresh in a default_root_dir that holds another run, deleting its "
                                 "checkpoints and logs first.")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        parser.given_args = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else None
        describe_subcommands(parser)
        super().parse_arguments(parser, args)
        # Before LightningCLI opens the checkpoint and copies the model's saved hyper-parameters over the config
        # (its ``_parse_ckpt_path``): what the user typed is checked against the checkpoint first, so that copy
        # changes nothing. ``test_checkpoint_never_overrides_the_command_line`` guards that order.
        subcommand = self.config.get("subcommand") or "fit"  # run=False: the caller fits
        config = self.config[subcommand] if self.config.get("subcommand") else self.config
        require_positive("trainer.accumulate_grad_batches", config.trainer.accumulate_grad_batches)
        check_run_values(config)
        require_step(subcommand, config.model.class_path)
        check_launch(config.trainer)
        root = Path(config.trainer.default_root_dir or os.getcwd())
        config.trainer.default_root_dir = str(root)
        self.settings = run_settings(config)
        self.record.subcommand = subcommand
        self.record.folder = self.folder = run_folder.open_run_folder(
            subcommand, root, config.get("ckpt_path"), config.overwrite, self.settings,
            writes=run_folder.is_launching_process(), fast_dev_run=bool(config.trainer.fast_dev_run))
        if "ckpt_path" in config:  # a subcommand's
            config.ckpt_path = self.folder.ckpt_path
        else:  # run=False: the caller fits with the trainer as with a plain Trainer, unguarded by the lock
            self.folder.release()
        self.pointed_loggers = logs.point_loggers_at(config.trainer, self.folder.out)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(str(config.trainer.accelerator))

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The config's trainer, plus the project's defaults where the user set nothing of their own: resumable
        checkpoints, atomic writes, a progress bar that redraws every 10 steps, and TensorBoard in the run folder."""
        trainer = (self.config_init[self.subcommand] if self.subcommand else self.config_init)["trainer"]
        callbacks = [*(trainer.get("callbacks") or []), StopOnSigterm(), SharedRunFolder(), RequeueAtStepEnd()]
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:  # beside last.ckpt: ``best``
                callback.dirpath = os.path.realpath(checkpoint_dir(trainer["default_root_dir"]))
        if trainer.get("enable_checkpointing") is not False:
            callbacks.append(ResumeCheckpoint(settings=self.settings))
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(TidyProgressBar(refresh_rate=10))
        plugins = trainer.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins = [*plugins, AtomicCheckpointIO()]
        logger = logs.default_logger(trainer.get("logger"), self.folder.out)
        with trainer_settings():
            self.record.trainer = super().instantiate_trainer(callbacks=callbacks, plugins=plugins, logger=logger,
                                                              **kwargs)
        logs.unpoint_loggers(self.pointed_loggers)
        return self.record.trainer

    def after_fit(self) -> None:
        run_folder.print_written(self.trainer, self.started, checkpoint_dir(self.trainer.default_root_dir),
                                 self.folder.out)

    def after_validate(self) -> None:
        run_folder.print_written(self.trainer, self.started, self.folder.out)

    after_test = after_predict = after_export = after_validate



def _class_names_of(datamodule: L.LightningDataModule) -> list[str] | None:
    """The regression DataModules have no classes; their models take no ``class_names``."""
    names = getattr(datamodule, "class_names", None)
    return list(names) if names else None


def make_cli(args: list[str] | None = None, run: bool = True,
             record: run_folder.CommandRecord | None = None) -> LitTutorialCLI:
    """The project's LightningCLI; with ``run=False`` it only builds the model, data and trainer."""
    return LitTutorialCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"deterministic": True, "logger": logs.DEFAULT_LOGGER},
        parser_kwargs={"prog": "lit-tutorial", "description": DESCRIPTION, "epilog": EPILOG},
        auto_configure_optimizers=False,
        trainer_class=ExportingTrainer,
        parser_class=ShortErrorParser,
        args=args,
        run=run,
        record=record,
    )


def main(args: list[str] | None = None) -> None:
    """Run ``fit``/``validate``/``test``/``predict``; a user error ends as one sentence on stderr and exit code 2.
    A command that fails leaves nothing behind: the folders it made are removed, unless a fit had already trained
    (then its checkpoints and logs are the user's)."""
    quiet_known_noise()
    record, finished = run_folder.CommandRecord(), False
    try:
        check_config_files(sys.argv[1:] if args is None else args)
        make_cli(args, record=record)
        finished = True
    except SIGTERMException:
        print(f"\nlit_tutorial: stopped by SIGTERM; {record.after_sigterm()}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as error:
        record.undo()
        user_error = user_error_in(error)
        if user_error is None:
            raise
        exit_with(str(user_error))
    finally:
        record.close(finished)
