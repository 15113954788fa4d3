"""The operator process: credentials, leader election, kopf, resync, probes, metrics, shutdown.

`run_operator` is what `srvthreds-operator run` calls. Exit status: 0 after SIGTERM/SIGINT,
1 when the leader Lease is lost or kopf stops on its own (so the pod restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any

import kopf
from aiohttp import web
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

from srvthreds_operator import health, metrics
from srvthreds_operator.backoff import RetryPolicy
from srvthreds_operator.dispatcher import Dispatcher
from srvthreds_operator.handlers import PLURAL, build_registry
from srvthreds_operator.kube import ApiKube
from srvthreds_operator.leader import LeaderElector
from srvthreds_operator.logs import configure_logging
from srvthreds_operator.reconcile import Reconciler
from srvthreds_operator.settings import CHILD_RESOURCES, RuntimeSettings, tune_kopf

logger = logging.getLogger(__name__)

KOPF_STOP_TIMEOUT = 30.0


def run_operator(settings: RuntimeSettings) -> None:
    """Run until SIGTERM/SIGINT; SystemExit(1) when the Lease is lost or kopf stops by itself.

    Raising (rather than returning a status) makes the exit status reach the shell whatever the
    caller does with the return value, which is what restarts the pod.
    """
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    status = asyncio.run(_run(settings))
    if status:
        raise SystemExit(status)


async def connect() -> ApiClient:
    """An API client from KUBECONFIG (or ~/.kube/config), else the in-cluster service account.

    In-cluster, kubernetes_asyncio re-reads the projected token before it expires.
    """
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig or _has_default_kubeconfig():
        client: ApiClient = await kube_config.new_client_from_config(config_file=kubeconfig)
        return client
    configuration = Configuration()
    kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
        client_configuration=configuration, try_refresh_token=True
    )
    return ApiClient(configuration)


def _has_default_kubeconfig() -> bool:
    return os.path.exists(os.path.expanduser("~/.kube/config"))


def install_watch_heartbeats(heartbeats: health.WatchHeartbeats) -> None:
    """Record every listing, event and bookmark per watched kind, for the liveness probe.

    NB: kopf drops BOOKMARK events before any handler sees them, so this wraps kopf's internal
    `continuous_watch` (stable since kopf 1.3x; a unit test fails if it moves).
    """
    from kopf._cogs.clients import watching

    original = watching.continuous_watch
    if getattr(original, "__srvthreds_heartbeat__", False):
        return

    async def continuous_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for item in original(resource=resource, **kwargs):
            heartbeats.beat(str(resource.plural))
            yield item

    continuous_watch.__srvthreds_heartbeat__ = True  # type: ignore[attr-defined]
    watching.continuous_watch = continuous_watch


async def _serve_probes(
    settings: RuntimeSettings, heartbeats: health.WatchHeartbeats
) -> list[web.AppRunner]:
    runners = []
    if settings.liveness_port:
        app = health.liveness_app(heartbeats, max_age=settings.watch_stale_seconds)
        runners.append(await health.serve(app, port=settings.liveness_port))
    if settings.metrics_port:
        runners.append(
            await health.serve(health.metrics_app(heartbeats), port=settings.metrics_port)
        )
    return runners


def _watched_kinds() -> list[str]:
    return [PLURAL, "configmaps", "secrets", *(plural for _, plural in CHILD_RESOURCES)]


async def _run(settings: RuntimeSettings) -> int:
    stop = asyncio.Event()
    _trap_signals(stop)
    heartbeats = health.WatchHeartbeats()
    runners = await _serve_probes(settings, heartbeats)
    api = await connect()
    kube = ApiKube(api, reporting_instance=settings.identity, record_write=metrics.record_write)
    elector = _elector(settings, kube=kube)
    try:
        if elector is not None and not await _until_leader(elector, stop=stop):
            return 0
        metrics.LEADER.set(1)
        heartbeats.expect(_watched_kinds())
        install_watch_heartbeats(heartbeats)
        return await _lead(settings, kube=kube, elector=elector, stop=stop)
    finally:
        metrics.LEADER.set(0)
        if elector is not None:
            await elector.release()
        await api.close()
        for runner in runners:
            await runner.cleanup()


def _elector(settings: RuntimeSettings, *, kube: ApiKube) -> LeaderElector | None:
    if not settings.leader_election:
        return None
    return LeaderElector(
        kube,
        namespace=settings.lease_namespace,
        identity=settings.identity,
        name=settings.lease_name,
        lease_seconds=settings.lease_seconds,
        renew_seconds=settings.renew_seconds,
    )


def _trap_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _until_leader(elector: LeaderElector, *, stop: asyncio.Event) -> bool:
    """Wait as a standby (doing nothing else) until we lead; False when stopped first."""
    logger.info("waiting for the leader lease as %s", elector.identity)
    acquire = asyncio.create_task(elector.acquire(), name="leader-acquire")
    stopped = asyncio.create_task(stop.wait(), name="stop-wait")
    done, _ = await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (acquire, stopped):
        task.cancel()
    return acquire in done and not acquire.cancelled()


async def _lead(
    settings: RuntimeSettings, *, kube: ApiKube, elector: LeaderElector | None, stop: asyncio.Event
) -> int:
    from srvthreds_operator.blueprint import ModelBlueprint

    blueprint = ModelBlueprint()
    dispatcher = Dispatcher(
        reconciler=Reconciler(kube=kube, blueprint=blueprint),
        blueprint=blueprint,
        retry_policy=RetryPolicy(
            base_seconds=settings.retry_base_seconds, cap_seconds=settings.retry_max_seconds
        ),
    )
    kopf_settings = kopf.OperatorSettings()
    tune_kopf(kopf_settings)
    kopf_stop = asyncio.Event()
    kopf_ready = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=build_registry(dispatcher),
            settings=kopf_settings,
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            stop_flag=kopf_stop,
            ready_flag=kopf_ready,
        ),
        name="kopf",
    )
    watchers = {operator, asyncio.create_task(stop.wait(), name="stop-wait")}
    ready = asyncio.create_task(kopf_ready.wait(), name="kopf-ready")
    await asyncio.wait({ready, operator}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    # kopf installs its own SIGTERM handler; ours must win so shutdown releases the lease.
    _trap_signals(stop)
    resync = asyncio.create_task(dispatcher.resync_forever(interval=settings.resync_seconds))
    lost = asyncio.create_task(elector.hold(), name="leader-hold") if elector else None
    if lost is not None:
        watchers.add(lost)
    await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
    status = 0 if stop.is_set() else 1
    if lost is not None and lost.done():
        logger.error("lost the leader lease; stopping so the pod restarts as a standby")
    elif operator.done():
        logger.error("kopf stopped unexpectedly: %r", _task_error(operator))
    await _shutdown(operator=operator, kopf_stop=kopf_stop, others=[resync, *watchers])
    await dispatcher.stop()
    return status


def _task_error(task: asyncio.Task[Any]) -> BaseException | None:
    if task.cancelled():
        return None
    return task.exception()


async def _shutdown(
    *, operator: asyncio.Task[None], kopf_stop: asyncio.Event, others: Sequence[asyncio.Task[Any]]
) -> None:
    kopf_stop.set()
    for task in others:
        if task is not operator:
            task.cancel()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
        await asyncio.wait_for(operator, timeout=KOPF_STOP_TIMEOUT)
    await asyncio.gather(*others, return_exceptions=True)
