"""What a command prints: Lightning's known-harmless messages silenced one by one, and whole subcommand help lines.

Each message below is matched exactly (its text, or the metric names it is about), so any other warning or log
line, the project's own and Lightning's, still shows. ``tests/test_console.py`` runs commands and checks both.
"""

import logging
import re
import warnings

from lightning_utilities.core import rank_zero

from lit_tutorial.internals import set_subcommand_help

# What ``lit-tutorial --help`` says above and below its list of options.
DESCRIPTION = (
    "lit_tutorial: the 'Learning PyTorch with Examples' tutorial rebuilt with PyTorch Lightning, one config per "
    "step. Subcommands: fit (train), validate, test (per-class accuracy and figures; image steps), predict "
    "(predictions.csv; image steps), export (ONNX and a plain state_dict; image steps)."
)
EPILOG = (
    "Pass a step config from configs/, e.g. lit-tutorial fit --config configs/step6_optim.yaml; stack overlays from "
    "configs/overlays/ after it. --ckpt_path last (or best) continues or evaluates the run's saved checkpoint; "
    "fit --ckpt_path auto continues the run if there is one and starts it otherwise (for job scripts); evaluating "
    "the untrained weights takes --ckpt_path initial; fit --overwrite replaces an earlier run in the same folder. "
    "lit-tutorial <subcommand> --help lists every key."
)

#: The help line of each subcommand in ``lit-tutorial --help``. LightningCLI takes the first line of the Trainer
#: method's docstring, which Lightning wraps mid-sentence.
SUBCOMMAND_HELP = {
    "fit": "Train; checkpoints and logs go to the run folder.",
    "validate": "Score a checkpoint on the validation split.",
    "test": "Score a checkpoint on the test set, per class.",
    "predict": "Classify the test set, or your pictures (data.predict_dir), into predictions.csv.",
}

# Python warnings: (message regex, category). The regex is matched from the start of the message.
_KNOWN_WARNINGS = [
    # torch deprecated LeafSpec; Lightning's own lightning/pytorch/utilities/_pytree.py still builds one.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # predict: Lightning only records batch indices for torch DataLoaders; predictions.csv carries each image's
    # index itself, from the batch.
    (r"Couldn't infer the batch indices fetched from your dataloader: `TensorLoader`", UserWarning),
    # Under DDP: these metrics are logged as ``metric.compute()``, which torchmetrics has already synchronised
    # across processes, so Lightning's advice to add ``sync_dist=True`` does not apply to them.
    (r"It is recommended to use `self\.log\('(val_loss|val_acc|test_acc|test_acc_\w+)', \.\.\., sync_dist=True\)`",
     UserWarning),
]

# Lightning's log lines: (the logger that emits it, message regex).
_KNOWN_LOG_LINES = [
    # An advertisement for a cloud service, on every command.
    (rank_zero.log, r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]"),
    # Lightning saving a checkpoint (every epoch) says it chose the default of an option the project never sets.
    (logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector"),
     r"`weights_only` was not set, defaulting to `False`\.$"),
]


class _DropMatching(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


_LOG_FILTERS = [(logger, _DropMatching(pattern)) for logger, pattern in _KNOWN_LOG_LINES]


def quiet_known_noise() -> None:
    """Silence the known-harmless messages above, and nothing else (calling it again changes nothing)."""
    for message, category in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for logger, log_filter in _LOG_FILTERS:
        logger.addFilter(log_filter)  # a filter already there is not added twice


def describe_subcommands(parser) -> None:
    """Give ``lit-tutorial --help`` (the main parser) one whole sentence per subcommand."""
    set_subcommand_help(parser, SUBCOMMAND_HELP)
