"""What a run is: its resolved settings, recorded in each checkpoint and compared when the checkpoint is reused.

A resumed fit must share every setting with the run it continues (the model, the data and the trainer's
numerics); an evaluation must share the model's. Settings are compared as resolved, defaults included, so a
setting present on one side only, or spelled as its default on one side, is judged by its value.
"""

import json
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from lit_tutorial.errors import UserError
from lit_tutorial.internals import cli_model_config

SETTINGS_KEY = "lit_tutorial_settings"
# Where the data lives, how batches are gathered and what a prediction reads change no trained number (a folder's
# images are compared by their fingerprint instead, see ImageFolderDataModule.load_state_dict).
NEUTRAL_SETTINGS = ("data.init_args.data_dir", "data.init_args.download", "data.init_args.num_workers",
                    "data.init_args.device_resident", "data.init_args.predict_dir", "data.init_args.root",
                    "data.init_args.test_root", "model.init_args.class_names")
# The trainer's numerics, with Lightning's defaults: an unset value means the default.
TRAINER_DEFAULTS = {"accumulate_grad_batches": 1, "precision": "32-true", "gradient_clip_val": 0.0,
                    "gradient_clip_algorithm": "norm"}
# Lightning's short spellings of a precision and the one each stands for.
_PRECISIONS = {"64": "64-true", "32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "half": "16-true",
               "double": "64-true"}
# What an evaluation must share with the checkpoint: the model, and the normalisation it was trained with.
EVALUATION_SETTINGS = ("model.", "data.init_args.mean", "data.init_args.std")


def run_settings(config: Namespace) -> dict[str, Any]:
    """What a checkpoint records of the run that wrote it: the model, the data and the trainer's numerics."""
    settings = {**flat_settings(_plain(config.model), "model."), **flat_settings(_plain(config.data), "data.")}
    for key, default in TRAINER_DEFAULTS.items():
        settings[f"trainer.{key}"] = _resolved(key, _plain(config.trainer.get(key)), default)
    return settings


def _resolved(key: str, value: Any, default: Any) -> Any:
    if value is None:
        return default
    if key == "precision":
        return _PRECISIONS.get(str(value), str(value))
    if key == "gradient_clip_val":
        return float(value)
    return value


def flat_settings(config: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"model.init_args.optimizer.init_args.lr": 0.0001, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _plain(value):
    """A config value as JSON-able dicts, lists and scalars."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def recorded_settings(checkpoint: dict) -> dict[str, Any] | None:
    """The settings a checkpoint of this project records, or ``None`` for another program's checkpoint."""
    saved = checkpoint.get(SETTINGS_KEY)
    return json.loads(saved) if saved else None


def check_same_settings(path: Path, checkpoint: dict, settings: dict[str, Any], what: str,
                        only: tuple[str, ...] = ("",)) -> None:
    """Refuse when a setting starting with one of ``only`` differs from the run that wrote ``checkpoint``.

    A setting on one side only differs too (say, a learning-rate scheduler added on resume). ``what`` names the
    action, e.g. "resume from" or "test": the sentence says how to go on either way.
    """
    before = recorded_settings(checkpoint)
    if before is not None:
        _check_record(path, before, settings, what, only)
    _check_hyper_parameters(path, checkpoint, before, settings, only)


def _check_record(path: Path, before: dict[str, Any], settings: dict[str, Any], what: str,
                  only: tuple[str, ...]) -> None:
    for key in sorted(set(before) | set(settings)):
        if key.startswith(NEUTRAL_SETTINGS) or not key.startswith(only):
            continue
        old, new = before.get(key, _UNSET), settings.get(key, _UNSET)
        if _unset_parent(key, old, new, before, settings) or _same(old, new):
            continue
        raise UserError(
            f"{path} was trained with {key}={_shown(old)} but this command has {_shown(new)}; to {what} it, use "
            "the checkpoint's value (the run's config.yaml has them all), or train a new run with another "
            "--trainer.default_root_dir."
        )


_UNSET = object()


def _same(a: Any, b: Any) -> bool:
    return a is b or (a is not _UNSET and b is not _UNSET and json.dumps(a) == json.dumps(b))


def _shown(value: Any) -> str:
    return "nothing" if value is _UNSET else repr(value)


def _unset_parent(key: str, old: Any, new: Any, before: dict, settings: dict) -> bool:
    """``lr_scheduler: null`` on one side and ``lr_scheduler.class_path: …`` on the other: the child keys name the
    difference better than their parent does."""
    side = settings if old is None and new is _UNSET else before if new is None and old is _UNSET else None
    return side is not None and any(k.startswith(f"{key}.") for k in side)


def _check_hyper_parameters(path: Path, checkpoint: dict, record: dict[str, Any] | None, settings: dict[str, Any],
                            only: tuple[str, ...]) -> None:
    """LightningCLI rebuilds the model from the checkpoint's ``hyper_parameters``, after this check: they must say
    what this command says, or the checkpoint would swap the model unseen (one of another config, or one edited by
    hand after its settings were recorded)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    config = cli_model_config(hparams)
    if hparams and "class_path" not in config:
        raise UserError(f"{path} names no model class in its hyper_parameters (a model built in Python, not by "
                        "lit-tutorial), so the command cannot rebuild its model; give a checkpoint that fit wrote.")
    flat = flat_settings(config, "model.")
    for key, value in flat.items():
        if key.startswith(NEUTRAL_SETTINGS) or not key.startswith(only) or key not in settings:
            continue
        if json.dumps(settings[key]) != json.dumps(value):
            if record is not None and key in record and json.dumps(record[key]) != json.dumps(value):
                raise UserError(f"{path} is inconsistent: its hyper_parameters give {key}={value!r} but its run was "
                                f"trained with {record[key]!r}, so the file was edited; use the checkpoint as fit "
                                "wrote it.")
            raise UserError(f"{path} holds another model: its hyper_parameters give {key}={value!r} but this command "
                            f"has {settings[key]!r}; give a checkpoint of this config's model.")
