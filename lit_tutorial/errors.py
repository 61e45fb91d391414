"""Errors a user can cause, and their translation into one sentence on stderr with exit code 2.

``UserError`` is raised by the project wherever a config, a file or the data is wrong. Errors raised by
jsonargparse (the command line and config files) and by Lightning (Trainer settings) are translated here too;
anything else is a bug and keeps its traceback.
"""

import errno
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.utilities.exceptions import MisconfigurationException


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


def exit_with(message: str) -> NoReturn:
    print(f"lit_tutorial: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# jsonargparse explains a bad value against every member of ``Union[Class, None]``; these lines are that noise.
_NOISE = re.compile(
    r"Does not validate against any of the Union subtypes|^Subtypes:|^Errors:|Expected a <class 'NoneType'>"
    r"|^Given value( type)?:"
)


def one_sentence(message: object) -> str:
    lines = [line.strip(" -") for line in str(message).splitlines()]
    return " ".join(line for line in lines if line and not _NOISE.search(line))


def sentence(message: str, then: str) -> str:
    """``message`` then ``then``, with one period between them however ``message`` ends."""
    return f"{message.rstrip().rstrip('.')}. {then}"


class ShortErrorParser(LightningArgumentParser):
    """Reports a config error as one line instead of the usage screen."""

    # The command line being parsed, set by the CLI: a missing model is explained by the configs given.
    given_args: list[str] | None = None

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        missing = re.search(r"arguments are required: (\w+)\.(data|model)\b", message)
        if missing and self.given_args is not None:
            exit_with(_no_step_config(missing.group(1), self.given_args))
        exit_with(sentence(one_sentence(message), "Run with --help to see the accepted keys and types."))


def user_error_in(error: BaseException) -> UserError | None:
    """The user's mistake behind ``error`` as one sentence: our own UserError, a Trainer setting Lightning rejects,
    or a package that a class or option chosen in the config needs; jsonargparse may have wrapped it while
    instantiating classes, so the whole chain of causes and contexts is searched. ``None``: a bug."""
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
            return UserError(f"trainer: {one_sentence(seen).rstrip('.')}; fix that setting in the config.")
        if isinstance(seen, ImportError) and named is not None:
            what = named.group(1).rsplit(".", 1)[-1]
            reason = re.sub(r"\.?\s*HINT: Try running", "; install it with", str(seen).strip())
            return UserError(f"{what} needs a package that is not installed: {reason}, then run again.")
        if isinstance(seen, ModuleNotFoundError):  # e.g. an accelerator whose package is missing
            return UserError(f"an option in the config needs a package this environment lacks "
                             f"({one_sentence(seen).rstrip('.')}); install it, or drop that option.")
    return None


# --- config files, read before jsonargparse so that their mistakes are named with the file ----------------------
def config_paths(args: list[str]) -> list[str]:
    """The files given with ``--config``/``-c`` on a command line, in order."""
    paths = [value for flag, value in zip(args, args[1:], strict=False) if flag in ("-c", "--config")]
    return paths + [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]


def check_config_files(args: list[str]) -> None:
    """An empty or malformed YAML file, named with its line; an overlay given before (or without) a step config."""
    contents = []
    for path in map(Path, config_paths(args)):
        if not path.is_file():
            continue  # jsonargparse names a missing file itself
        try:
            content = read_config_file(path)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(error, "problem", None) or "unreadable"
            raise UserError(f"config file {path} is not valid YAML{where} ({problem}); fix it there.") from None
        if not isinstance(content, dict):
            raise UserError(f"config file {path} holds no settings; pass one of the step configs in configs/.")
        contents.append((path, content))
    steps = [i for i, (_, content) in enumerate(contents) if "model" in content]
    overlays = [path for path, content in contents[: steps[0] if steps else len(contents)]
                if "data" in content and "class_path" not in content["data"]]
    if overlays and args:
        raise UserError(_no_step_config(args[0], args, overlay=str(overlays[0])))


def _no_step_config(subcommand: str, args: list[str], overlay: str | None = None) -> str:
    """Why no model or data was given, as one sentence: no config at all, or an overlay without a step config."""
    configs = config_paths(args)
    example = f"lit-tutorial {subcommand} --config configs/step6_optim.yaml"
    if overlay is None and configs and not any(_has_model(path) for path in configs):
        overlay = configs[-1]
    if overlay is not None:
        return f"{overlay} is an overlay: stack it after a step config, e.g. {example} --config {overlay}."
    return f"{subcommand} needs a step config: pass one of configs/, e.g. {example}."


def _has_model(config: str) -> bool:
    try:
        content = yaml.safe_load(Path(config).read_text())
    except (OSError, yaml.YAMLError):
        return True  # not ours to judge: the parser names an unreadable file itself
    return isinstance(content, dict) and "model" in content


# --- values and files LightningCLI accepts but cannot use -------------------------------------------------------
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
