"""Finds the test services' executables, installed by hack/install-services.sh."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.localcluster.layout import REPO_ROOT, cache_root, load_versions

INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-services.sh"
# Debian's /usr/sbin/rabbitmq* wrappers switch to the rabbitmq user and its /var/lib folder;
# the scripts behind them honour the RABBITMQ_* environment of the caller.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


class MissingServiceError(RuntimeError):
    """A test service is not installed; the message says how to install it."""


def _missing(what: str, where: Path | str) -> MissingServiceError:
    return MissingServiceError(
        f"{what} not found ({where}): run `make services` (hack/install-services.sh) first"
    )


def _on_path(name: str) -> Path:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin")
    if found is None:
        raise _missing(name, "PATH")
    return Path(found)


def redis_server_binary() -> Path:
    return _on_path("redis-server")


def epmd_binary() -> Path:
    return _on_path("epmd")


def rabbitmq_script(name: str) -> Path:
    """rabbitmq-server, rabbitmqctl or rabbitmq-diagnostics, without Debian's user switch."""
    path = RABBITMQ_BIN / name
    if not os.access(path, os.X_OK):
        raise _missing(name, path)
    return path


def ferretdb_binary() -> Path:
    """`KUBEBUILDER_ASSETS/ferretdb` when present, else the build cache's pinned version."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and os.access(Path(assets) / "ferretdb", os.X_OK):
        return Path(assets) / "ferretdb"
    version = load_versions()["FERRETDB_VERSION"]
    path = cache_root() / "ferretdb" / version / "bin" / "ferretdb"
    if not os.access(path, os.X_OK):
        raise _missing(f"ferretdb v{version}", path)
    return path
