"""Configuration errors that name the file, the key and what is wrong."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration or model file is unreadable or invalid.

    Each problem is (key, reason); str() gives one line per problem, each starting with
    the file name, so a user sees every mistake at once.
    """

    def __init__(self, path: str | Path, problems: Sequence[tuple[str, str]]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(
            f"{self.path}: {key}: {reason}" if key else f"{self.path}: {reason}" for key, reason in self.problems
        )


def _label(data: Any, loc: Sequence[int | str]) -> str:
    """A key path such as points[3] (active_power).address, with list items named."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            name = None
            if isinstance(node, Sequence) and not isinstance(node, str) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, Mapping):
                    name = node.get("name") or node.get("id")
            else:
                node = None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]" + (f" ({name})" if name else "")]
        else:
            node = node.get(item) if isinstance(node, Mapping) else None
            parts.append(str(item))
    return ".".join(parts)


def problems_of(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    """Turn a pydantic error into (key path, reason) pairs."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        # Drop pydantic's internal tags (function-after[...], union members).
        loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in {"int", "str", "float", "bool"}))]
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        elif err["type"] == "missing":
            reason = "required key is missing"
        out.append((_label(data, loc), reason))
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax errors into a ConfigError."""
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, [("", "file not found")]) from None
    except PermissionError:
        raise ConfigError(path, [("", "permission denied")]) from None
    except IsADirectoryError:
        raise ConfigError(path, [("", "is a directory, not a file")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"not valid TOML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [("", f"not UTF-8 text: {exc}")]) from None


def validate(model: type[M], data: Any, path: str | Path) -> M:
    """Validate data against a pydantic model, naming file and key on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, problems_of(exc, data)) from None


def _resolved(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return resolve_paths(value, base)
    if isinstance(value, list):
        return [_resolved(v, base) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolved(v, base) for v in value)
    if isinstance(value, dict):
        return {k: _resolved(v, base) for k, v in value.items()}
    return value


def resolve_paths(model: M, base: Path) -> M:
    """Every relative file name in a configuration, taken relative to `base`.

    Configurations name files relative to their own folder, so a program started
    from any working directory finds its spool, stores, logs, keys and certificates
    where the file says, and never litters the directory it was started from.
    """
    updates = {
        name: resolved
        for name in type(model).model_fields
        if (resolved := _resolved(value := getattr(model, name), base)) is not value
    }
    return model.model_copy(update=updates) if updates else model
