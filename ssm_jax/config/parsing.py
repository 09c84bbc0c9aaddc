"""How every entry point reads its flags (`ssm-jax`, the experiments, the benchmarks, the launcher): tyro with
one-line errors, a config's leaf names as flags, and resumed configs."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import tyro

from ssm_jax.config import io as config_io

ConfigT = TypeVar("ConfigT")


class UsageError(Exception):
    """A user's mistake: printed as one line, exit code 2."""


def exit_with_error(message: str) -> NoReturn:
    """One line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _one_line(event: Any) -> None:
    """tyro's parse-error hook: the common mistakes become a one-line `UsageError` instead of tyro's box."""
    errors = tyro._errors  # private: pyproject pins tyro exactly; anything unrecognised keeps tyro's box
    if isinstance(event, errors.InvalidChoice):
        name = event.argument.display_name()
        raise UsageError(f"invalid value {event.value!r} for {name}; expected one of {', '.join(event.choices)}")
    if isinstance(event, errors.UnrecognizedArgs):
        raise UsageError(f"unrecognized argument(s) {' '.join(event.tokens)} (see {event.prog} --help)")
    if isinstance(event, errors.MissingArgs):
        names = [" / ".join(context.arg.lowered.name_or_flags) for context in event.missing_arguments]
        raise UsageError(f"missing {', '.join(names)} (see {event.prog} --help)")
    if isinstance(event, errors.BadValue):
        name = event.argument.display_name()
        problem = "needs a value" if event.offending_value is None else f"takes no value, got {event.offending_value!r}"
        raise UsageError(f"{name} {problem} (see {event.prog} --help)")
    if isinstance(event, errors.InstantiationFailure):
        name = "" if event.argument is None else f"{'/'.join(event.argument.lowered.name_or_flags)}: "
        raise UsageError(f"{name}{' '.join(str(event.message).split())}")


def parse(
    cls: type[ConfigT], args: Sequence[str], prog: str, description: str, default: ConfigT | None = None
) -> ConfigT:
    """`tyro.cli(cls, default=default, args=args)`; a class with `FLAT_FLAGS = True` (`ssm_jax.config.RunConfig`)
    takes its nested fields as flags named by the leaf alone (`--horizon`, not `--trainer.horizon`).

    Raises:
        UsageError: a bad flag or value (including a `__post_init__` ValueError), in one line, before anything
            compiles (tyro's own box remains for rarer mistakes, with exit code 2 too).
    """
    defaults = {} if default is None else {"default": default}
    annotated = tyro.conf.OmitArgPrefixes[cls] if getattr(cls, "FLAT_FLAGS", False) else cls
    with tyro._errors.on_parse_error(_one_line):
        return tyro.cli(annotated, args=list(args), prog=prog, description=description, **defaults)


def command_line(cls: type[ConfigT], description: str | None = None, default: ConfigT | None = None) -> ConfigT:
    """`cls` from this process's command line (`parse` of `sys.argv[1:]`, named by the running `python -m` module
    and described by `description`, else the first paragraph of that module's docstring): the entry point of a
    script with flags of its own (a benchmark, `experiments.smoke`). A user's mistake is one line on stderr and
    exit code 2 (`exit_with_error`), before anything compiles."""
    main = sys.modules["__main__"]
    prog = f"python -m {main.__spec__.name}" if getattr(main, "__spec__", None) is not None else None
    description = description or (main.__doc__ or "").strip().split("\n\n")[0]
    try:
        return parse(cls, sys.argv[1:], prog, description, default)
    except UsageError as error:
        exit_with_error(str(error))


def resumed_config(run_dir: Path, args: Sequence[str], prog: str, ignored: Sequence[str] = ()) -> Any:
    """The config stored in `run_dir/config.json`, with `args` parsed on top of it: a resumed run keeps its own
    config, so a flag that changes a field (other than those `ignored`) is a `UsageError` naming it. The one
    exception extends a run: `--iterations` above the run's own (chunk `c` always draws the same key, so the
    extended run is the run started with that many iterations; the caller stores the new config)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: not a run directory (no config.json)")
    stored = read_config(path)
    if not dataclasses.is_dataclass(stored):
        raise UsageError(f"{path}: not a run's config")
    config = parse(type(stored), args, prog, f"Resuming {run_dir}.", stored)
    extends = lambda field, given, kept: field == "iterations" and given > kept
    contradicting = [d for d in config_differences(stored, config) if d[0] not in ignored and not extends(*d)]
    if contradicting:
        field, given, kept = contradicting[0]
        flag = "--" + (field.rsplit(".", 1)[-1] if getattr(type(stored), "FLAT_FLAGS", False) else field).replace(
            "_", "-"
        )
        raise UsageError(
            f"--resume {run_dir}: {flag} {given!r} (the run has {kept!r}); a resumed run keeps its config (it may only "
            "raise --iterations)"
        )
    return config


def config_differences(stored: Any, given: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """`(dotted field, given value, stored value)` for every leaf field where two configs differ."""
    if dataclasses.is_dataclass(stored) and type(stored) is type(given):
        return [
            diff
            for f in dataclasses.fields(stored)
            for diff in config_differences(getattr(stored, f.name), getattr(given, f.name), f"{prefix}{f.name}.")
        ]
    return [] if stored == given else [(prefix.rstrip("."), given, stored)]


def read_config(path: Path) -> Any:
    """`config_io.read_config`, its error a `UsageError`."""
    try:
        return config_io.read_config(path)
    except ValueError as error:
        raise UsageError(str(error)) from None
