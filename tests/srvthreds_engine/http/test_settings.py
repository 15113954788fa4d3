"""Settings from the environment, and the error that names a bad variable."""

from __future__ import annotations

import sys
from pathlib import Path

import pydantic
import pytest

from srvthreds_engine.apps.embedded import event_loop_factory
from srvthreds_engine.apps.settings import (
    Settings,
    SettingsError,
    environment_variable_names,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in environment_variable_names():
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings()
    assert settings.port == 3001
    assert settings.in_memory
    assert settings.api_token is None
    assert settings.log_format == "json"
    assert settings.synchronous_mode is None


def test_values_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "TEXT")
    monkeypatch.setenv("API_TOKEN", "tok")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("PROFILE_DIR", "/profiles/demo")
    monkeypatch.setenv("SYNCHRONOUS_MODE", "false")
    settings = load_settings()
    assert (settings.port, settings.log_level, settings.log_format) == (8080, "DEBUG", "text")
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "tok"
    assert not settings.in_memory
    assert settings.profile_dir == Path("/profiles/demo")
    assert settings.synchronous_mode is False


def test_empty_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "")
    monkeypatch.setenv("SYNCHRONOUS_MODE", "")
    settings = load_settings()
    assert settings.api_token is None
    assert settings.synchronous_mode is None


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "70000")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "PORT=" in message
    assert "LOG_FORMAT='xml'" in message


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(pydantic.ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_the_variable_list_covers_the_documented_names() -> None:
    names = environment_variable_names()
    for name in ("PORT", "HOST", "REDIS_URL", "MONGODB_URL", "RABBITMQ_URL", "API_TOKEN"):
        assert name in names
    assert Settings.model_fields.keys()


def test_the_event_loop_is_chosen_by_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "AsyncIO")
    assert load_settings().event_loop == "asyncio"
    assert event_loop_factory("asyncio") is None
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(SettingsError, match="EVENT_LOOP='trio'"):
        load_settings()


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import uvloop` raise ImportError.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert event_loop_factory("auto") is None
    with pytest.raises(SettingsError, match="EVENT_LOOP='uvloop': uvloop is not installed"):
        event_loop_factory("uvloop")
