"""Engine settings: frozen, read once from the environment and validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["json", "text"]
EventLoopChoice = Literal["auto", "asyncio", "uvloop"]


class SettingsError(ValueError):
    """A setting from the environment is invalid; the message names the variable."""


class Settings(BaseSettings):
    """What the engine process reads from its environment (empty backend URL = in-memory)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    port: int = Field(default=3001, ge=1, le=65535, description="HTTP API port.")
    host: str = Field(default="0.0.0.0", description="HTTP API bind address.")  # noqa: S104
    redis_url: str = Field(
        default="", description="Redis URL (thred state, sessions, locks); empty = in memory."
    )
    mongodb_url: str = Field(
        default="", description="MongoDB URL (event records, thred log, archive); empty = memory."
    )
    rabbitmq_url: str = Field(
        default="",
        description="RabbitMQ URL: set, the engine is a node of a distributed engine (shared "
        "event queue); empty = the embedded mode (needs REDIS_URL and MONGODB_URL unset too).",
    )
    log_level: LogLevel = Field(default="INFO", description="Log level.")
    log_format: LogFormat = Field(
        default="json", description="`json` (an object a line) or `text`."
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token required by POST /events and the thred endpoints when set.",
    )
    profile_dir: Path | None = Field(
        default=None, description="Profile folder used when `run` gets no --profile."
    )
    synchronous_mode: bool | None = Field(
        default=None,
        description="Process events one at a time (true) or concurrently (false); "
        "unset = the profile's engine.json `synchronousMode` (default true).",
    )
    event_queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Inbound queue capacity of the embedded mode (POST /events: 503 while "
        "full, 413 for a list larger than the capacity).",
    )
    max_concurrent_events: int = Field(
        default=64, ge=1, description="Events processed at once when not in synchronous mode."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest POST /events body accepted (413 beyond)."
    )
    records_kept: int = Field(
        default=1000,
        ge=1,
        description="Event records, thred log records and archived threds kept in memory "
        "(embedded mode; the oldest are forgotten).",
    )
    messages_kept: int = Field(
        default=200, ge=0, description="Outbound messages kept for GET /messages (embedded mode)."
    )
    event_loop: EventLoopChoice = Field(
        default="auto",
        description="`uvloop`, `asyncio`, or `auto` (uvloop when installed): uvloop costs "
        "less CPU per request than asyncio's loop.",
    )
    patterns_dir: Path | None = Field(
        default=None,
        description="Pattern folder (the operator mounts the patterns ConfigMap there); "
        "unset = the profile's `patterns/`. Watched: a changed folder is validated and swapped "
        "in without a restart.",
    )
    pattern_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often the pattern folder is checked for changes."
    )
    event_prefetch: int = Field(
        default=10,
        ge=1,
        description="Unacknowledged event deliveries a replica holds at once (RabbitMQ prefetch).",
    )
    max_delivery_attempts: int = Field(
        default=5,
        ge=1,
        description="Processings of an event that fail unexpectedly before it is dead-lettered.",
    )
    shutdown_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time SIGTERM/SIGINT waits for queued events to drain."
    )
    # --- agents (`srvthreds-engine agent session|persistence`) ---------------------------------
    node_id: str = Field(
        default="",
        description="This agent's node id (§12); empty = `<NODE_ID_PREFIX><POD_INDEX + 1>` for "
        "the session agent, `org.wt.persistence1` for the persistence agent.",
    )
    node_id_prefix: str = Field(
        default="org.wt.session", description="Session agent node ids: prefix + (pod index + 1)."
    )
    pod_index: int = Field(
        default=0, ge=0, description="The StatefulSet pod ordinal (the operator sets it)."
    )
    session_port: int = Field(
        default=3000, ge=1, le=65535, description="Session agent client port (HTTP + socket.io)."
    )
    jwt_secret: SecretStr | None = Field(
        default=None, description="Signing secret of access tokens (session agent; required)."
    )
    refresh_token_secret: SecretStr | None = Field(
        default=None, description="Signing secret of refresh tokens (session agent; required)."
    )
    jwt_expire_time: int = Field(
        default=3600, ge=1, description="Access token lifetime in seconds (§13)."
    )
    refresh_token_expire_time: int = Field(
        default=36000, ge=1, description="Refresh token lifetime in seconds (§13)."
    )
    bootstrap_admin_id: str = Field(
        default="",
        description="A participant created with the admin role at start when it does not exist "
        "(its password from BOOTSTRAP_ADMIN_PASSWORD), so a fresh cluster can be logged into.",
    )
    bootstrap_admin_password: SecretStr | None = Field(
        default=None, description="The bootstrap admin's password (from a Secret)."
    )
    login_attempts_per_minute: int = Field(
        default=10, ge=1, description="Failed logins allowed per participant id and minute."
    )
    data_task_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long dataControl waits for the persistence agent's answer (5200 after).",
    )
    mailbox_seconds: int = Field(
        default=600,
        ge=1,
        description="How long a message for a participant who is not connected is kept for "
        "their next connection (session agent).",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", "event_loop", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "api_token",
        "jwt_secret",
        "refresh_token_secret",
        "bootstrap_admin_password",
        mode="before",
    )
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("profile_dir", "patterns_dir", "synchronous_mode", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def agent_node_id(self, *, default: str) -> str:
        """NODE_ID when set, else `default`."""
        return self.node_id or default

    def session_node_id(self) -> str:
        """The session agent's node id: NODE_ID, else prefix + (pod index + 1)."""
        return self.node_id or f"{self.node_id_prefix}{self.pod_index + 1}"

    @property
    def in_memory(self) -> bool:
        """True when no backend URL is set: the embedded single-process mode."""
        return not (self.redis_url or self.mongodb_url or self.rabbitmq_url)


def environment_variable_names() -> list[str]:
    """The environment variables Settings reads, in declaration order (for docs and messages)."""
    return [name.upper() for name in Settings.model_fields]


def load_settings() -> Settings:
    """Read the settings from the environment, or raise SettingsError naming each bad variable."""
    try:
        return Settings()
    except pydantic.ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        variable = str(error["loc"][0]).upper() if error["loc"] else "<settings>"
        problems.append(f"{variable}={error.get('input')!r}: {error['msg']}")
    return "invalid environment: " + "; ".join(problems)
