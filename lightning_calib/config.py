"""Config composition: ``__base__`` files deep-merged under a config.

A config may name the files it builds on::

    __base__: _base.yaml          # or a list; paths relative to this file's folder
    model:
      loss:
        class_path: losses.ACLS

The bases are loaded (recursively) and merged in order, then the file itself on top:
dicts merge key by key, lists and scalars replace, and a dict whose ``class_path`` differs
from the one below replaces it whole (``init_args`` of one class never leak into another).
The result is a complete config, so ``--print_config`` shows every value and a shipped
``<dataset>/<loss>.yaml`` is a whole run by itself.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BASE_KEY", "ConfigError", "compose", "merge"]

BASE_KEY = "__base__"


class ConfigError(ValueError):
    """A config file is missing, unreadable, or composed in a cycle."""


def merge(base: Any, override: Any) -> Any:
    """Deep-merge ``override`` onto ``base`` (neither is modified)."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    if "class_path" in override and override.get("class_path") != base.get("class_path"):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if key in out else copy.deepcopy(value)
    return out


def compose(path: str | Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load ``path`` with its ``__base__`` files merged underneath.

    Raises:
        ConfigError: the file (or a base) does not exist, is not a YAML mapping, or the bases
            form a cycle.
    """
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"config bases form a cycle: {chain}")
    if not path.is_file():
        where = f" (named in {_stack[-1]})" if _stack else ""
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        with path.open() as stream:  # a named stream: YAML errors then name the file
            data = yaml.safe_load(stream) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_error(err)}") from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from err
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping at the top; got {type(data).__name__}"
        )
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, compose(path.parent / base, (*_stack, path)))
    return merge(merged, data)


def _yaml_error(err: yaml.YAMLError) -> str:
    """``line L, column C: problem (context)`` of a YAML error, on one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem + (f" ({context})" if context else "")


def has_bases(path: str | Path) -> bool:
    """Whether the YAML file at ``path`` names ``__base__`` files (cheap peek)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and BASE_KEY in data
