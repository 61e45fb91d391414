"""Errors a user can cause, reported by the CLI as one sentence and a non-zero exit."""

import errno
import os
from contextlib import contextmanager
from pathlib import Path

import yaml


class UserError(Exception):
    """A problem with the user's config, files or data, explained in its message."""


def require_positive(name: str, value: float) -> None:
    """Reject a size, count or rate that is not > 0, naming the config key."""
    if not value > 0:  # also catches NaN
        raise UserError(f"{name} must be > 0, got {value!r}; set it to a positive value in the config.")


def require_seed(name: str, value: int) -> None:
    """A seed torch's generators take, with room for the per-epoch offsets added to it."""
    if not 0 <= value < 2**32:
        raise UserError(f"{name} must be between 0 and {2**32 - 1}, got {value}; pick another seed.")


def check_run_values(config) -> None:
    """Values LightningCLI accepts but cannot use, in a parsed config: a negative or NaN gradient clip (Lightning
    records it and clips with it), a seed numpy refuses (Lightning fails with a traceback)."""
    clip = config.trainer.get("gradient_clip_val")
    if clip is not None and not clip >= 0:  # also catches NaN
        raise UserError(f"trainer.gradient_clip_val must be >= 0, got {float(clip)}; 0 or no value clips nothing.")
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool):  # true means seed 0, false no seeding
        require_seed("seed_everything", seed)


def require_short_names(name: str, path: Path) -> None:
    """A path the file system can hold: for a folder name over its limit ``Path.exists`` raises instead of
    answering False, and ``mkdir`` fails."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            longest = max(len(os.fsencode(part)) for part in path.parts)
            raise UserError(f"{name} is too long for the file system (its longest folder name has {longest} bytes, "
                            f"the whole path {len(os.fsencode(path))}); give one with shorter folder names.") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last
    value and drops the first silently (a second ``trainer:`` block would drop the first one's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the safe loader's own error names it
                break
            if seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} is given twice, first at line {first_line[key] + 1}",
                    problem_mark=key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path):
    """The YAML content of a config file; a key given twice raises ``yaml.YAMLError`` (with its line), a file that
    is not UTF-8 text a UserError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise UserError(f"config file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at line "
                        f"{line}); save it as UTF-8.") from None
    return yaml.load(text, Loader=_UniqueKeyLoader)


@contextmanager
def trainer_settings():
    """Around building the Trainer: a ValueError there means a setting it cannot run with on this machine, e.g.
    ``strategy: fsdp`` without a GPU (Lightning raises plain ValueErrors for these), said as one sentence."""
    try:
        yield
    except ValueError as error:
        message = " ".join(str(error).split()).rstrip(".")
        raise UserError(f"trainer: {message}; fix that setting in the config.") from error
