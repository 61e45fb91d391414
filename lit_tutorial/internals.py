"""The project's few reliances on Lightning's private behaviour, fenced here, each with a fallback and a test.

Everything else in ``lit_tutorial`` uses Lightning's public API. An entry here names the private detail it relies
on, why, what happens if Lightning changes it, and the test (``tests/test_internals.py``) that fails by name when it
does.
"""

from typing import Any

import lightning as L
from lightning.pytorch.core.mixins import hparams_mixin

#: The attribute Lightning sets on the LightningModule around every hook call (``trainer/call.py``) so that
#: ``self.log`` knows which hook it is called from.
HOOK_NAME_ATTRIBUTE = "_current_fx_name"


class FastHookNameMixin(L.LightningModule):
    """Assigns Lightning's hook-name attribute without ``nn.Module.__setattr__``'s checks.

    Lightning sets ``_current_fx_name`` before and after every hook call, about 40 times a training step. Through
    ``nn.Module.__setattr__`` (which checks whether the value is a parameter, buffer or submodule) each assignment
    costs many times a plain one, a visible share of the regression steps' tiny steps (figures in BENCHMARKS.md).

    Fallback: only a ``str`` or ``None`` takes the short path, the values Lightning assigns today; anything else,
    and every other attribute, goes through ``nn.Module.__setattr__`` as usual. ``object.__setattr__`` still honours
    a property should Lightning turn the attribute into one, so a change in Lightning can cost this speed-up but not
    correctness. ``tests/test_internals.py::test_lightning_still_names_the_running_hook_in_current_fx_name`` fails
    when Lightning stops setting the attribute, i.e. when this mixin has become dead weight.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == HOOK_NAME_ATTRIBUTE and (value is None or type(value) is str):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def set_subcommand_help(parser: Any, helps: dict[str, str]) -> bool:
    """Replace the help line of each subcommand named in ``helps``, in the listing and in its own ``--help``.

    LightningCLI takes a subcommand's help from the first line of the Trainer method's docstring, which Lightning
    wraps mid-sentence, and passes it straight to jsonargparse. The listing keeps it in argparse's private
    per-subcommand pseudo-actions (``_choices_actions``) of jsonargparse's private ``_subcommands_action``.

    Fallback: a parser without them keeps Lightning's help lines (returns False); nothing else changes.
    ``tests/test_console.py::test_help_lists_each_subcommand_in_a_whole_sentence`` fails by name when the listing no
    longer shows these lines.
    """
    action = getattr(parser, "_subcommands_action", None)
    choices = getattr(action, "_choices_actions", None)
    if not choices:
        return False
    for choice in choices:
        if choice.dest in helps:
            choice.help = helps[choice.dest]
            action.choices[choice.dest].description = helps[choice.dest]
    return True


def built_by_cli() -> bool:
    """True while LightningCLI builds a module from its config (``load_from_checkpoint_support``, on by default).

    Then ``save_hyperparameters()`` records the config itself (the net and the optimizer as ``class_path`` and
    ``init_args``), from which ``load_from_checkpoint`` rebuilds the whole model; a module built in Python is handed
    the objects themselves, which a checkpoint must not pickle. LightningCLI passes that config through the private
    context variable ``_given_hyperparameters`` of ``lightning/pytorch/core/mixins/hparams_mixin.py``.

    Fallback: without that variable this answers False, and models leave out their net and optimizer as a model
    built in Python does: ``load_from_checkpoint`` then needs ``net=`` passed, nothing else changes.
    ``tests/test_internals.py::test_lightning_still_hands_the_cli_config_to_save_hyperparameters`` fails by name
    when the variable goes.
    """
    given = getattr(hparams_mixin, "_given_hyperparameters", None)
    return given is not None and given.get() is not None


#: The keys LightningCLI adds to a checkpoint's ``hyper_parameters`` beside the model's own arguments
#: (``lightning/pytorch/cli.py``, ``_InstantiatorFn``): the model's class and the function that rebuilds it.
CLI_CLASS_PATH_KEY, CLI_INSTANTIATOR_KEY = "_class_path", "_instantiator"


def cli_model_config(hyper_parameters: dict) -> dict:
    """A checkpoint's ``hyper_parameters`` as the model config LightningCLI rebuilds the model from on resume:
    ``{"class_path": …, "init_args": {…}}`` (no ``class_path`` when Lightning wrote none).

    Fallback: if Lightning renames its keys, they show up as two unknown init arguments, which no settings record
    holds, so the check that uses this compares the arguments alone.
    ``tests/test_internals.py::test_lightning_still_records_the_models_class_path_in_hyper_parameters`` fails by
    name when the class path is no longer there.
    """
    init_args = {k: v for k, v in hyper_parameters.items() if k not in (CLI_CLASS_PATH_KEY, CLI_INSTANTIATOR_KEY)}
    config = {"init_args": init_args}
    if CLI_CLASS_PATH_KEY in hyper_parameters:
        config["class_path"] = hyper_parameters[CLI_CLASS_PATH_KEY]
    return config
