"""The "restricted" Pod Security Standard (plus a read-only root filesystem) as a pure check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Volume types the restricted profile allows.
ALLOWED_VOLUME_SOURCES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
})  # fmt: skip
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})


def restricted_violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """Every way `pod_spec` breaks the restricted standard; empty when it complies."""
    problems = _pod_level(pod_spec)
    pod_context = pod_spec.get("securityContext") or {}
    containers = [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]
    for container in containers:
        problems += [
            f"container {container.get('name')!r}: {problem}"
            for problem in _container_level(container, pod_context=pod_context)
        ]
    return problems


def _pod_level(pod_spec: Mapping[str, Any]) -> list[str]:
    problems = [
        f"{field} is true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod_spec.get(field)
    ]
    for volume in pod_spec.get("volumes", []):
        sources = set(volume) - {"name"}
        if not sources <= ALLOWED_VOLUME_SOURCES:
            problems.append(f"volume {volume.get('name')!r} uses {sorted(sources)}")
    return problems


def _container_level(container: Mapping[str, Any], *, pod_context: Mapping[str, Any]) -> list[str]:
    context = container.get("securityContext") or {}

    def effective(field: str) -> Any:
        return context.get(field, pod_context.get(field))

    problems = []
    if context.get("privileged"):
        problems.append("privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if effective("runAsUser") == 0:
        problems.append("runAsUser is 0")
    seccomp = (effective("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        problems.append(f"seccompProfile.type is {seccomp!r}")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in capabilities.get("drop", []):
        problems.append("capabilities.drop lacks ALL")
    if extra := set(capabilities.get("add", [])) - ALLOWED_ADDED_CAPABILITIES:
        problems.append(f"capabilities.add has {sorted(extra)}")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        problems.append("uses a hostPort")
    return problems
