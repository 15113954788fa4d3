"""One idempotent, level-based reconcile pass of a SrvThredsCluster, as an ordered checklist.

The pass reads the CR body it is given, computes every desired child from the pure builders
(through the `Blueprint` seam), applies what differs with server-side apply, prunes children that
are no longer desired, observes the workloads and writes the status only when it changed.
All I/O goes through the `Kube` protocol, so the whole pass runs against an in-memory fake in tests.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from srvthreds_operator.kube import FIELD_MANAGER, KindNotServedError, Kube, KubeError
from srvthreds_operator.ledger import ApplyLedger, ChildKey, child_key, owns_field
from srvthreds_operator.status import (
    Observation,
    Problem,
    WorkloadObservation,
    compute_status,
    observe_workload,
    status_differs,
)

API_VERSION = "srvthreds.io/v1alpha1"
KIND = "SrvThredsCluster"
PAUSE_ANNOTATION = "srvthreds.io/reconcile"
MANAGED_BY = "app.kubernetes.io/managed-by=srvthreds-operator"
HANDOFF_MANAGER = "srvthreds-operator-handoff"
SCALED_KINDS = frozenset({"Deployment", "StatefulSet"})
BROKER_COMPONENTS = frozenset({"redis", "mongodb", "rabbitmq"})
ENDPOINT_SCHEMES = {
    "sessionAgent": "http",
    "redis": "redis",
    "mongodb": "mongodb",
    "rabbitmq": "amqp",
}

Manifest = dict[str, Any]
KindRef = tuple[str, str]
"""(apiVersion, kind)."""

logger = logging.getLogger(__name__)


class InvalidSpecError(Exception):
    """A spec the schema accepted but the operator refuses; names the field and the problem."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field_path = field_path
        self.problem = problem


class Blueprint(Protocol):
    """The seam to the pure model and builders (adapted in `blueprint.py`)."""

    def parse(self, body: Mapping[str, Any]) -> Any:
        """The typed cluster; raises InvalidSpecError."""
        ...

    def credential_secret_names(self, cluster: Any) -> list[str]:
        """Names of the generated-once credential Secrets this cluster needs."""
        ...

    def referenced_objects(self, cluster: Any) -> list[tuple[str, str]]:
        """(kind, name) of user ConfigMaps/Secrets whose content the pods use."""
        ...

    def build(
        self,
        cluster: Any,
        *,
        credentials: Mapping[str, Mapping[str, str] | None],
        content_hashes: Mapping[str, str],
        owner_uid: str,
    ) -> list[Manifest]:
        """Every desired child in apply order; raises InvalidSpecError."""
        ...

    def prune_kinds(self) -> list[KindRef]:
        """Every kind the operator may create, so leftovers can be found and deleted."""
        ...


class Result(enum.StrEnum):
    """How a pass ended; the label of the reconcile counter."""

    APPLIED = "applied"
    PAUSED = "paused"
    INVALID = "invalid"
    ERROR = "error"
    TERMINATING = "terminating"
    """The CR or its namespace is being deleted: nothing was done and no retry is due."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a pass did, for logs, metrics and tests."""

    result: Result
    phase: str
    applied: tuple[ChildKey, ...] = ()
    pruned: tuple[ChildKey, ...] = ()
    status_written: bool = False
    failures: int = 0
    """Failed passes in a row, this one included (0 unless the result is ERROR)."""
    error_reason: str | None = None
    """The reason of the problem that failed this pass (ApplyFailed, ReadFailed, ApiError)."""


def utc_now() -> str:
    """RFC 3339 seconds, the format metav1.Time uses."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def paused_by(body: Mapping[str, Any]) -> str | None:
    """Who paused reconciliation, or None; read from the raw body so it works for any spec."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    if annotations.get(PAUSE_ANNOTATION) == "paused":
        return f"annotation {PAUSE_ANNOTATION}=paused"
    if (body.get("spec") or {}).get("paused") is True:
        return "spec.paused"
    return None


def content_hash(obj: Mapping[str, Any] | None) -> str:
    """Hash of a ConfigMap's or Secret's data; 'absent' keeps a missing object visible."""
    if obj is None:
        return "absent"
    digest = hashlib.sha256()
    for field in ("data", "binaryData", "stringData"):
        for key, value in sorted((obj.get(field) or {}).items()):
            digest.update(f"{field}\0{key}\0{value}\0".encode())
    return digest.hexdigest()[:16]


def decode_secret(secret: Mapping[str, Any] | None) -> dict[str, str] | None:
    """A Secret's data decoded to text, or None when the Secret does not exist."""
    if secret is None:
        return None
    data = secret.get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def component_key(label: str) -> str:
    """`session-agent` (label) -> `sessionAgent` (status key)."""
    head, *rest = label.split("-")
    return head + "".join(part.capitalize() for part in rest)


def engine_selector(children: Iterable[Mapping[str, Any]]) -> str | None:
    """The engine Deployment's selector as a string, for the scale subresource."""
    for child in children:
        labels = (child.get("metadata") or {}).get("labels") or {}
        if child.get("kind") == "Deployment" and labels.get("app.kubernetes.io/component") == (
            "engine"
        ):
            match = ((child.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            return ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    return None


def endpoints(children: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """In-cluster URLs of the client Services (never credentials)."""
    found: dict[str, str] = {}
    for child in children:
        if child.get("kind") != "Service":
            continue
        metadata = child.get("metadata") or {}
        spec = child.get("spec") or {}
        component = component_key(
            (metadata.get("labels") or {}).get("app.kubernetes.io/component", "")
        )
        ports = spec.get("ports") or []
        if component not in ENDPOINT_SCHEMES or spec.get("clusterIP") == "None" or not ports:
            continue
        host = f"{metadata.get('name')}.{metadata.get('namespace')}.svc"
        found[component] = f"{ENDPOINT_SCHEMES[component]}://{host}:{ports[0].get('port')}"
    return found


def hpa_floors(children: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """(kind, name) of each workload an HPA scales -> that HPA's minReplicas (default 1)."""
    floors: dict[tuple[str, str], int] = {}
    for child in children:
        if child.get("kind") != "HorizontalPodAutoscaler":
            continue
        spec = child.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        if target.get("kind") and target.get("name"):
            floors[(str(target["kind"]), str(target["name"]))] = int(spec.get("minReplicas", 1))
    return floors


def observe_workloads(children: Sequence[Mapping[str, Any]]) -> list[WorkloadObservation]:
    """Every Deployment/StatefulSet among the live children, reduced for the status."""
    floors = hpa_floors(children)
    observed = []
    for child in children:
        if child.get("kind") not in SCALED_KINDS:
            continue
        metadata = child.get("metadata") or {}
        label = str((metadata.get("labels") or {}).get("app.kubernetes.io/component", ""))
        floor = floors.get((str(child.get("kind")), str(metadata.get("name", ""))), 0)
        observed.append(
            observe_workload(
                child,
                component=component_key(label),
                broker=label in BROKER_COMPONENTS,
                floor=floor,
            )
        )
    return observed


def seeded_replicas(manifest: Manifest, *, desired: Sequence[Manifest]) -> Manifest | None:
    """The manifest with replicas = the HPA's minReplicas, for a workload an HPA will scale.

    Why: the operator leaves `replicas` to the HPA, so a workload created without it would start
    at 1 and look ready before the HPA raises it to its floor; only the creation is seeded.
    """
    spec = manifest.get("spec") or {}
    if manifest.get("kind") not in SCALED_KINDS or "replicas" in spec:
        return None
    name = str((manifest.get("metadata") or {}).get("name", ""))
    floor = hpa_floors(desired).get((str(manifest.get("kind")), name))
    if floor is None:
        return None
    return {**manifest, "spec": {**spec, "replicas": floor}}


def owned_by(obj: Mapping[str, Any], *, uid: str) -> bool:
    """True when the object has an owner reference to the CR with this uid."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


@dataclasses.dataclass
class _Memory:
    """What the reconciler remembers per CR between passes (lost on restart, by design)."""

    uid: str = ""
    phase: str | None = None
    paused: bool = False
    error: str | None = None
    sent: Mapping[str, Any] | None = None
    """The status we last wrote (without lastReconcileTime)."""
    stored: Mapping[str, Any] | None = None
    """The status the API server answered that write with (without status.kopf)."""
    skipped: frozenset[str] = frozenset()
    terminating: bool = False
    failures: int = 0
    """Failed passes in a row; reported as status.retries and reset by a successful pass."""


class _NamespaceTerminatingError(Exception):
    """Raised out of the apply loop: the namespace is being deleted, so stop the pass."""


@dataclasses.dataclass
class _Pass:
    """The state of one pass, threaded through the checklist steps."""

    body: Mapping[str, Any]
    namespace: str
    name: str
    uid: str
    generation: int
    applied: list[ChildKey] = dataclasses.field(default_factory=list)
    pruned: list[ChildKey] = dataclasses.field(default_factory=list)
    live: list[Manifest] = dataclasses.field(default_factory=list)
    problem: Problem | None = None
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name},{MANAGED_BY}"


class Reconciler:
    """Runs passes; holds the apply ledger and per-CR memory so steady state writes nothing."""

    def __init__(
        self,
        *,
        kube: Kube,
        blueprint: Blueprint,
        clock: Callable[[], str] = utc_now,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        self._kube = kube
        self._blueprint = blueprint
        self._clock = clock
        self._field_manager = field_manager
        self._ledger = ApplyLedger(field_manager=field_manager)
        self._memory: dict[tuple[str, str], _Memory] = {}

    def forget(self, *, namespace: str, name: str) -> None:
        """Drop per-CR memory once the CR is gone."""
        self._memory.pop((namespace, name), None)

    async def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        """One pass over the CR body; stops for good once the CR or its namespace goes away."""
        metadata = body.get("metadata") or {}
        run = _Pass(
            body=body,
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation", 0)),
        )
        memory = self._memory.get((run.namespace, run.name))
        if memory is None or memory.uid != run.uid:
            memory = _memory_from_status(body.get("status") or {}, uid=run.uid)
            self._memory[(run.namespace, run.name)] = memory
        if metadata.get("deletionTimestamp"):
            return self._stop(run, memory=memory, why="the cluster is being deleted")
        if memory.terminating:
            return Outcome(result=Result.TERMINATING, phase=str(memory.phase))
        try:
            return await self._checklist(run, memory=memory)
        except _NamespaceTerminatingError:
            return self._stop(run, memory=memory, why=f"namespace {run.namespace} is terminating")

    def _stop(self, run: _Pass, *, memory: _Memory, why: str) -> Outcome:
        """NB: retrying would only meet 403s (nothing new may be created in a terminating
        namespace) and each failed pass's status write would trigger the next one."""
        if not memory.terminating:
            logger.info("%s/%s: %s; reconciliation stops", run.namespace, run.name, why)
        memory.terminating = True
        return Outcome(result=Result.TERMINATING, phase=str(memory.phase))

    async def _checklist(self, run: _Pass, *, memory: _Memory) -> Outcome:
        """The checklist below returns at its first final step."""
        body = run.body
        try:
            cluster = self._blueprint.parse(body)
        except InvalidSpecError as error:
            return await self._refuse(run, memory=memory, error=error)
        who = paused_by(body)
        if who is not None:
            return await self._hold(run, memory=memory, who=who)
        try:
            desired = await self._desired(cluster, run=run)
        except InvalidSpecError as error:
            return await self._refuse(run, memory=memory, error=error)
        except KubeError as error:
            run.problem = Problem("ReadFailed", str(error))
            desired = None
        if desired is not None:
            try:
                await self._converge(desired, run=run)
            except KubeError as error:
                run.problem = run.problem or Problem("ApiError", str(error))
        return await self._report(run, memory=memory, hibernate=_hibernate(body))

    async def _desired(self, cluster: Any, *, run: _Pass) -> list[Manifest]:
        credentials = {
            name: decode_secret(await self._get(run, kind="Secret", name=name))
            for name in self._blueprint.credential_secret_names(cluster)
        }
        hashes = {
            f"{kind}/{name}": content_hash(await self._get(run, kind=kind, name=name))
            for kind, name in self._blueprint.referenced_objects(cluster)
        }
        children = self._blueprint.build(
            cluster, credentials=credentials, content_hashes=hashes, owner_uid=run.uid
        )
        return [_with_namespace(child, namespace=run.namespace) for child in children]

    async def _get(self, run: _Pass, *, kind: str, name: str) -> Manifest | None:
        return await self._kube.get(api_version="v1", kind=kind, namespace=run.namespace, name=name)

    async def _converge(self, desired: Sequence[Manifest], *, run: _Pass) -> None:
        existing = await self._existing(run)
        for manifest in desired:
            key = child_key(manifest)
            live = existing.get(key)
            seeded = seeded_replicas(manifest, desired=desired) if live is None else None
            if seeded is not None:
                # Created at the HPA's floor; the hand-off below then releases replicas to it.
                live = await self._apply(seeded, run=run)
                if live is None:
                    continue
            if self._ledger.needs_apply(manifest, live=live):
                await self._hand_off_replicas(manifest, live=live, run=run)
                live = await self._apply(manifest, run=run)
            if live is not None:
                run.live.append(live)
        if run.problem is None:
            await self._prune(existing, desired=desired, run=run)

    async def _existing(self, run: _Pass) -> dict[ChildKey, Manifest]:
        found: dict[ChildKey, Manifest] = {}
        for api_version, kind in self._blueprint.prune_kinds():
            for obj in await self._kube.list(
                api_version=api_version,
                kind=kind,
                namespace=run.namespace,
                label_selector=run.selector,
            ):
                found[child_key(obj)] = obj
        return found

    async def _hand_off_replicas(
        self, manifest: Manifest, *, live: Manifest | None, run: _Pass
    ) -> None:
        """NB: when an HPA takes over a workload the desired manifest drops `replicas`; applying
        that while we own the field would make the API server remove it, i.e. reset the workload
        to 1 replica. So a second field manager first co-owns the current value, and the field
        survives our apply until the HPA's own updates take it over."""
        if (
            live is None
            or manifest.get("kind") not in SCALED_KINDS
            or "replicas" in (manifest.get("spec") or {})
            or not owns_field(live, field_manager=self._field_manager, path=("spec", "replicas"))
        ):
            return
        current = (live.get("spec") or {}).get("replicas")
        handoff = {
            "apiVersion": manifest["apiVersion"],
            "kind": manifest["kind"],
            "metadata": {"name": manifest["metadata"]["name"], "namespace": run.namespace},
            "spec": {"replicas": current},
        }
        try:
            await self._kube.apply(handoff, field_manager=HANDOFF_MANAGER)
        except KubeError as error:
            logger.warning("replica hand-off for %s failed: %s", handoff["metadata"], error)

    async def _apply(self, manifest: Manifest, *, run: _Pass) -> Manifest | None:
        key = child_key(manifest)
        try:
            live = await self._kube.apply(manifest)
        except KindNotServedError as error:
            # Optional kinds (ServiceMonitor, PrometheusRule) whose CRD is absent: not a failure;
            # a later pass creates them once the CRD is served.
            run.skipped.append(
                f"{error.kind} {key[3]} skipped: {error.api_version} is not installed"
            )
            return None
        except KubeError as error:
            if error.namespace_terminating:
                raise _NamespaceTerminatingError from error
            logger.warning("apply %s/%s failed: %s", key[1], key[3], error)
            if run.problem is None:
                run.problem = Problem("ApplyFailed", f"apply {key[1]} {key[3]}: {error}")
            return None
        self._ledger.record(manifest, live=live)
        if key not in run.applied:
            run.applied.append(key)
        return live

    async def _prune(
        self, existing: Mapping[ChildKey, Manifest], *, desired: Sequence[Manifest], run: _Pass
    ) -> None:
        wanted = {child_key(m) for m in desired}
        for key, obj in existing.items():
            if key in wanted or not owned_by(obj, uid=run.uid):
                continue
            metadata = obj.get("metadata") or {}
            await self._kube.delete(
                api_version=key[0],
                kind=key[1],
                namespace=key[2] or None,
                name=key[3],
                uid=str(metadata.get("uid", "")),
            )
            self._ledger.forget(key)
            run.pruned.append(key)

    async def _observe_only(self, run: _Pass) -> None:
        existing = await self._existing(run)
        run.live.extend(existing.values())

    async def _refuse(self, run: _Pass, *, memory: _Memory, error: InvalidSpecError) -> Outcome:
        run.problem = Problem("InvalidSpec", str(error))
        if memory.error != str(error):
            await self._event(run, type_="Warning", reason="InvalidSpec", note=str(error))
        observation = Observation(generation=run.generation, problem=run.problem, spec_invalid=True)
        written = await self._write_status(run, memory=memory, observation=observation)
        memory.error = str(error)
        memory.phase = "Failed"
        memory.failures = 0
        return Outcome(result=Result.INVALID, phase="Failed", status_written=written)

    async def _hold(self, run: _Pass, *, memory: _Memory, who: str) -> Outcome:
        if not memory.paused:
            note = f"reconciliation paused by {who}; spec changes are not applied"
            await self._event(run, type_="Normal", reason="ReconciliationPaused", note=note)
        memory.paused = True
        memory.failures = 0
        try:
            await self._observe_only(run)
        except KubeError as error:
            run.problem = Problem("ReadFailed", str(error))
        observation = self._observation(run, hibernate=_hibernate(run.body), who=who)
        written = await self._write_status(run, memory=memory, observation=observation)
        memory.phase = "Paused"
        return Outcome(result=Result.PAUSED, phase="Paused", status_written=written)

    def _observation(
        self, run: _Pass, *, hibernate: bool, who: str | None = None, retries: int = 0
    ) -> Observation:
        return Observation(
            generation=run.generation,
            workloads=observe_workloads(run.live),
            paused_by=who,
            hibernate=hibernate,
            problem=run.problem,
            engine_selector=engine_selector(run.live),
            endpoints=endpoints(run.live),
            skipped=tuple(run.skipped),
            retries=retries,
        )

    async def _report(self, run: _Pass, *, memory: _Memory, hibernate: bool) -> Outcome:
        if memory.paused:
            await self._event(run, type_="Normal", reason="ReconciliationResumed", note="resumed")
            memory.paused = False
        error = run.problem.message if run.problem else None
        if error is not None and error != memory.error:
            await self._event(run, type_="Warning", reason="ReconcileFailed", note=error)
        memory.error = error
        for note in sorted(set(run.skipped) - memory.skipped):
            await self._event(run, type_="Warning", reason="OptionalKindMissing", note=note)
        memory.skipped = frozenset(run.skipped)
        memory.failures = memory.failures + 1 if run.problem else 0
        observation = self._observation(run, hibernate=hibernate, retries=memory.failures)
        written = await self._write_status(run, memory=memory, observation=observation)
        return Outcome(
            result=Result.ERROR if run.problem else Result.APPLIED,
            phase=str(memory.phase),
            applied=tuple(run.applied),
            pruned=tuple(run.pruned),
            status_written=written,
            failures=memory.failures,
            error_reason=run.problem.reason if run.problem else None,
        )

    async def _write_status(self, run: _Pass, *, memory: _Memory, observation: Observation) -> bool:
        """NB: the baseline is the status the API server answered our last write with, not the
        body's: a pass may run on a body the watch delivered before (or in between) our own
        writes, and comparing with that stale status would flip conditions back and forth, move
        their lastTransitionTime and write again. Only the operator writes this status, so what
        it last wrote is the newest there is; the body is the baseline only before our first
        write (e.g. after a restart)."""
        stored = memory.stored if memory.stored is not None else dict(run.body.get("status") or {})
        computed = compute_status(observation, previous=stored, now=self._clock())
        phase = str(computed["phase"])
        if memory.phase is not None and memory.phase != phase:
            note = f"phase {memory.phase} -> {phase}"
            await self._event(run, type_="Normal", reason="PhaseChanged", note=note)
        memory.phase = phase
        # A field the API server prunes or normalises differs from what we sent every time:
        # having sent exactly this status already, sending it again would change nothing.
        if not status_differs(computed, stored) or memory.sent == computed:
            return False
        try:
            patched = await self._kube.patch_status(
                api_version=API_VERSION,
                kind=KIND,
                namespace=run.namespace,
                name=run.name,
                status={**computed, "lastReconcileTime": self._clock()},
            )
        except KubeError as error:
            # The next trigger retries; a CR deleted mid-pass lands here too.
            logger.warning("status of %s/%s not written: %s", run.namespace, run.name, error)
            return False
        memory.sent = computed
        memory.stored = {k: v for k, v in (patched.get("status") or {}).items() if k != "kopf"}
        return True

    async def _event(self, run: _Pass, *, type_: str, reason: str, note: str) -> None:
        regarding = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": run.name,
                "namespace": run.namespace,
                "uid": run.uid,
                "resourceVersion": (run.body.get("metadata") or {}).get("resourceVersion"),
            },
        }
        await self._kube.create_event(
            regarding=regarding, type_=type_, reason=reason, note=note, action="Reconcile"
        )


def _memory_from_status(status: Mapping[str, Any], *, uid: str) -> _Memory:
    """After a restart, the stored status says which Events were already recorded."""
    paused = any(
        c.get("type") == "Paused" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return _Memory(
        uid=uid,
        phase=status.get("phase"),
        paused=paused,
        error=status.get("lastError"),
        failures=int(status.get("retries") or 0),
    )


def _hibernate(body: Mapping[str, Any]) -> bool:
    return (body.get("spec") or {}).get("hibernate") is True


def _with_namespace(child: Manifest, *, namespace: str) -> Manifest:
    metadata = child.get("metadata") or {}
    if metadata.get("namespace"):
        return child
    return {**child, "metadata": {**metadata, "namespace": namespace}}
