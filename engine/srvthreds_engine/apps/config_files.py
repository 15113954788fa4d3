"""Reading the sessions model and resolver config files with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import pydantic

from srvthreds_engine.core.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.core.errors import PatternError

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


class ConfigFileError(ValueError):
    """An unreadable or invalid config file: names the file and the JSON path."""


def json_path(location: tuple[int | str, ...]) -> str:
    """A pydantic error location as a JSON path (`groups[0].name`)."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "$"


def read_model(path: Path, *, model: type[ModelT]) -> ModelT:
    """Read and validate one JSON config file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from exc
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigFileError(f"{path}: {json_path(tuple(error['loc']))}: {error['msg']}") from exc


def read_sessions_model(path: Path | None) -> SessionsModel:
    """The sessions model file, or an empty model."""
    return SessionsModel() if path is None else read_model(path, model=SessionsModel)


def read_resolver_config(path: Path | None) -> ResolverConfig:
    """The resolver config file, or no service addresses."""
    return ResolverConfig() if path is None else read_model(path, model=ResolverConfig)


__all__ = ["ConfigFileError", "PatternError", "read_resolver_config", "read_sessions_model"]
