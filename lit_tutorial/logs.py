"""Where a command's loggers write: into its run folder (``logs/`` for fit, the evaluation's own folder
otherwise), without Lightning's ``version_N`` folders, whichever logger the config picks."""

from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.loggers import TensorBoardLogger

# Where a logger writes unless told: the command's folder (``logs/`` for fit, the evaluation's folder otherwise). A
# placeholder at parse time, filled once the folder is known; a logger picked with ``--trainer.logger=CSVLogger``
# keeps it, so it needs no ``save_dir`` of its own.
RUN_DIR = "<trainer.default_root_dir>"
# TensorBoard, without the ``hp_metric = -1`` it logs by default when no metric is named as the run's result.
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": RUN_DIR, "default_hp_metric": False},
}


def point_loggers_at(trainer: Namespace, out: Path) -> list[tuple[Namespace, Namespace]]:
    """Point every logger whose ``save_dir`` is still :data:`RUN_DIR` at ``out`` itself (no version folders).

    Returns each logger's settings and a copy of them as they were: once the loggers are built, the config that
    ``config.yaml`` records gets the placeholder back (:func:`unpoint_loggers`), so a run started from another
    run's ``config.yaml`` logs into its own folder, not into the other run's."""
    loggers = trainer.get("logger")
    changed = []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, Namespace) and logger.get("init_args.save_dir") == RUN_DIR:
            changed.append((logger.init_args, logger.init_args.clone()))
            logger.init_args.save_dir = str(out.parent)
            if logger.class_path.rsplit(".", 1)[-1] in ("TensorBoardLogger", "CSVLogger"):
                logger.init_args.name, logger.init_args.version = "", out.name
    return changed


def unpoint_loggers(changed: list[tuple[Namespace, Namespace]]) -> None:
    """Undo :func:`point_loggers_at` in the config, after the loggers were built from it."""
    for settings, before in changed:
        settings.update(before)


def default_logger(logger, out: Path):
    """The trainer's logger; ``logger: true`` (Lightning's own default) means TensorBoard in ``out`` too."""
    if logger is None or logger is True:
        return TensorBoardLogger(save_dir=out.parent, name="", version=out.name, default_hp_metric=False)
    return logger
