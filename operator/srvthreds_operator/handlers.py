"""kopf at the edge only: stateless event handlers that forward to the Dispatcher.

Only `@kopf.on.event` (watching) handlers are used: they store nothing on the objects (no
annotations, no status progress, no finalizer), which keeps the CR GitOps-clean and lets deletion
proceed by garbage collection even when the operator is down. Periodic resync is the
Dispatcher's loop, not a kopf timer (timers force a finalizer).
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from srvthreds_operator.dispatcher import Dispatcher
from srvthreds_operator.settings import CHILD_RESOURCES

GROUP = "srvthreds.io"
VERSION = "v1alpha1"
PLURAL = "srvthredsclusters"

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Re-read credentials on every (re)login, so expiring projected tokens are renewed."""
    if os.environ.get("KUBECONFIG") or not os.path.exists(
        os.path.join(SERVICE_ACCOUNT_DIR, "token")
    ):
        info: kopf.ConnectionInfo | None = kopf.login_with_kubeconfig(**kwargs)
        return info
    service_account: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    return service_account


def build_registry(dispatcher: Dispatcher) -> kopf.OperatorRegistry:
    """A fresh registry (nothing registers at import time) wired to one dispatcher."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)

    async def on_cluster(event: kopf.RawEvent, **_: Any) -> None:
        dispatcher.cluster_event(event_type=event.get("type"), body=event["object"])

    async def on_child(event: kopf.RawEvent, **_: Any) -> None:
        dispatcher.child_event(body=event["object"])

    async def on_config_map(event: kopf.RawEvent, **_: Any) -> None:
        dispatcher.referenced_event(kind="ConfigMap", body=event["object"])

    async def on_secret(event: kopf.RawEvent, **_: Any) -> None:
        dispatcher.referenced_event(kind="Secret", body=event["object"])

    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="cluster")(on_cluster)
    for group, plural in CHILD_RESOURCES:
        kopf.on.event(group, plural, registry=registry, id=f"child-{plural}")(on_child)
    kopf.on.event("", "configmaps", registry=registry, id="configmaps")(on_config_map)
    kopf.on.event("", "secrets", registry=registry, id="secrets")(on_secret)
    return registry
