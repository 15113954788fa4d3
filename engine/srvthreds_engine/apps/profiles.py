"""Profile folders: patterns, sessions model, resolver config, engine config and sessions."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from srvthreds_engine.apps.config_files import ConfigFileError, read_model
from srvthreds_engine.core.addresses import ResolverConfig, SessionsModel
from srvthreds_engine.core.errors import PatternError
from srvthreds_engine.core.patterns import Pattern, load_patterns, parse_pattern, pattern_files
from srvthreds_engine.ports import Session

Config = TypeVar("Config", bound=pydantic.BaseModel)


class SessionDirective(pydantic.BaseModel):
    """`{"$session": {...}}`: a live session for a participant."""

    model_config = pydantic.ConfigDict(extra="forbid")

    participantId: str = pydantic.Field(min_length=1)  # noqa: N815 - the contract's key
    nodeId: str = pydantic.Field(default="org.wt.session", min_length=1)  # noqa: N815
    roles: list[str] = pydantic.Field(default_factory=list)

    def to_session(self) -> Session:
        """The live session it declares."""
        return Session(
            participant_id=self.participantId, node_id=self.nodeId, roles=list(self.roles)
        )


class ProfileError(ValueError):
    """A profile folder or one of its files is missing or invalid; the message says where."""


class EngineConfig(pydantic.BaseModel):
    """The profile's optional `engine.json`."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    synchronousMode: bool = True  # noqa: N815 - the config key
    eventShutdownTimeout: int | None = pydantic.Field(default=None, ge=0)  # noqa: N815 - ms


class ProfileSessions(pydantic.RootModel[list[SessionDirective]]):
    """The profile's optional `sessions.json`: sessions that exist from the start.

    The same shape as replay's `$session` lines; the embedded mode has no session agent, so
    this is how a participant gets roles (e.g. `admin` for sysControl).
    """

    root: list[SessionDirective] = pydantic.Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything a profile folder configures."""

    directory: Path
    patterns: list[Pattern]
    sessions_model: SessionsModel
    resolver_config: ResolverConfig
    engine_config: EngineConfig
    sessions: list[SessionDirective]

    patterns_dir: Path


def load_profile(profile_dir: Path, *, patterns_dir: Path | None = None) -> Profile:
    """Read and validate a profile folder: its patterns and the optional JSON files.

    `patterns_dir` (PATTERNS_DIR: the patterns ConfigMap the operator mounts) replaces the
    profile's own `patterns/` folder.
    """
    if not profile_dir.is_dir():
        raise ProfileError(f"{profile_dir}: not a profile folder")
    patterns_dir = patterns_dir if patterns_dir is not None else profile_dir / "patterns"
    if not patterns_dir.is_dir():
        raise ProfileError(f"{patterns_dir}: no such pattern folder")
    try:
        patterns = load_pattern_folder(patterns_dir)
    except PatternError as exc:
        raise ProfileError(str(exc)) from None
    return Profile(
        directory=profile_dir,
        patterns=patterns,
        sessions_model=_read_config(profile_dir / "sessions_model.json", SessionsModel),
        resolver_config=_read_config(profile_dir / "resolver_config.json", ResolverConfig),
        engine_config=_read_config(profile_dir / "engine.json", EngineConfig),
        sessions=_read_config(profile_dir / "sessions.json", ProfileSessions).root,
        patterns_dir=patterns_dir,
    )


def load_pattern_folder(patterns_dir: Path) -> list[Pattern]:
    """Every pattern of the folder, validated; what start and reloads accept, they both refuse."""
    patterns = load_patterns([patterns_dir])
    if not patterns:
        raise PatternError(str(patterns_dir), json_path="", problem="no *.json pattern files")
    return patterns


def _read_config(path: Path, model: type[Config]) -> Config:
    """A JSON config file validated by `model`; a missing file means the model's defaults."""
    if not path.exists():
        return model()
    try:
        return read_model(path, model=model)
    except ConfigFileError as exc:
        raise ProfileError(str(exc)) from None


class PatternSource:
    """The patterns of a node: its folder (a mounted ConfigMap) and MongoDB's active ones."""

    def __init__(
        self,
        folder: Path | None,
        *,
        stored: Callable[[], Awaitable[list[dict[str, Any]]]] | None,
    ) -> None:
        self.folder = folder
        self._stored = stored

    def digest(self) -> str:
        """A digest of the folder's pattern files (names and contents): changes show here."""
        hasher = hashlib.sha256()
        if self.folder is not None and self.folder.is_dir():
            for path in pattern_files([self.folder]):
                hasher.update(path.name.encode())
                with contextlib.suppress(OSError):
                    hasher.update(path.read_bytes())
        return hasher.hexdigest()

    async def load(self) -> list[Pattern]:
        """Every pattern, validated; raises PatternError naming the file (or model) and path."""
        patterns = load_pattern_folder(self.folder) if self.folder is not None else []
        known = {pattern.pattern_id for pattern in patterns}
        if self._stored is not None:
            for document in await self._stored():
                name = f"PatternModel:{document.get('id', '?')}"
                pattern = parse_pattern(document, file=name)
                if pattern.pattern_id not in known:
                    known.add(pattern.pattern_id)
                    patterns.append(pattern)
        return patterns
