"""Building blocks of the operator integration tests: waits, kubectl, the operator, audit log."""

from __future__ import annotations

import base64
import contextlib
import copy
import ctypes
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.localcluster.audit import WRITE_VERBS, AuditEvent, parse_audit_lines
from tests.localcluster.kubectl import Kubectl, KubectlError
from tests.localcluster.layout import REPO_ROOT, ClusterLayout
from tests.localcluster.session import KubeCluster

Manifest = dict[str, Any]
T = TypeVar("T")

VENV_BIN = REPO_ROOT / ".venv" / "bin"
CRDS_DIR = REPO_ROOT / "crds"
SAMPLES_DIR = REPO_ROOT / "manifests" / "samples"
RBAC_FILE = REPO_ROOT / "manifests" / "base" / "rbac.yaml"

OPERATOR_USER = "srvthreds-operator"
FIELD_MANAGER = "srvthreds-operator"
CR_RESOURCE = "srvthredsclusters.srvthreds.io"
INSTANCE_LABEL = "app.kubernetes.io/instance"
CONFIG_HASH = "srvthreds.io/config-hash"

# The kinds a SrvThredsCluster owns, as kubectl resource names (group-qualified to be unambiguous).
RESOURCE_OF_KIND = {
    "Deployment": "deployments.apps",
    "StatefulSet": "statefulsets.apps",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "ServiceAccount": "serviceaccounts",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers.autoscaling",
    "PodDisruptionBudget": "poddisruptionbudgets.policy",
    "NetworkPolicy": "networkpolicies.networking.k8s.io",
    "CronJob": "cronjobs.batch",
    "Job": "jobs.batch",
    "Role": "roles.rbac.authorization.k8s.io",
    "RoleBinding": "rolebindings.rbac.authorization.k8s.io",
    "ServiceMonitor": "servicemonitors.monitoring.coreos.com",
    "PrometheusRule": "prometheusrules.monitoring.coreos.com",
}

# Waits are generous: the machine is two shared cores and the GC resyncs discovery every 30 s.
READY_TIMEOUT = 180.0
CHANGE_TIMEOUT = 120.0
GC_TIMEOUT = 150.0


class WaitTimeoutError(AssertionError):
    """A condition did not hold before its deadline; the message says what was awaited."""


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    diagnostics: Callable[[], str] | None = None,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Polls `predicate` until it returns something truthy, and returns that.

    kubectl failures inside the predicate count as "not yet" (the object may not exist yet); the
    last one is quoted if the deadline passes, together with `diagnostics()` (e.g. the operator's
    log). `abort` returns a reason to stop early (e.g. the operator has exited).
    """
    deadline = time.monotonic() + timeout
    last_problem = ""
    while True:
        try:
            value = predicate()
        except KubectlError as error:
            last_problem = str(error)
        else:
            if value:
                return value
            last_problem = f"last value: {value!r}"[:2000]
        reason = abort() if abort is not None else None
        if reason is not None:
            raise WaitTimeoutError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:.0f} s waiting for {what} ({last_problem})"
            if diagnostics is not None:
                message += "\n" + diagnostics()
            raise WaitTimeoutError(message)
        time.sleep(interval)


# --- kubectl ------------------------------------------------------------------------------------


def admin_kubectl(cluster: KubeCluster) -> Kubectl:
    """kubectl as the cluster's admin."""
    return Kubectl.for_kubeconfig(cluster.kubeconfig)


def get_json(kube: Kubectl, *args: str) -> Manifest:
    """`kubectl get ARGS -o json` parsed."""
    output = kube("get", *args, "-o", "json").stdout
    parsed: Manifest = json.loads(output)
    return parsed


def get_object(kube: Kubectl, resource: str, name: str, *, namespace: str) -> Manifest | None:
    """One object, or None when it does not exist."""
    result = kube("get", resource, name, "-n", namespace, "-o", "json", "--ignore-not-found")
    if not result.stdout.strip():
        return None
    parsed: Manifest = json.loads(result.stdout)
    return parsed


def list_objects(
    kube: Kubectl, resources: Iterable[str], *, namespace: str, selector: str | None = None
) -> list[Manifest]:
    """Every object of the given resources in the namespace (optionally label-selected)."""
    args = ["get", ",".join(resources), "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    items: list[Manifest] = json.loads(kube(*args).stdout)["items"]
    return items


def apply(
    kube: Kubectl,
    manifests: Sequence[Manifest],
    *,
    field_manager: str = "integration-tests",
    check: bool = True,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Server-side apply of the manifests (a YAML stream on stdin)."""
    return kube(
        "apply", "--server-side", f"--field-manager={field_manager}", "--force-conflicts",
        *extra, "-f", "-",
        input=yaml.safe_dump_all(manifests), check=check,
    )  # fmt: skip


def merge_patch(
    kube: Kubectl, resource: str, name: str, *, namespace: str, patch: Mapping[str, Any]
) -> None:
    """A JSON merge patch, as a person editing the object would make."""
    kube("patch", resource, name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def ensure_namespace(kube: Kubectl, name: str) -> None:
    apply(kube, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])


BOOLS = frozenset({"True", "False"})


def served_resources(kube: Kubectl) -> set[str]:
    """The `kind` names the API server serves (to leave out opt-in kinds whose CRD is absent)."""
    output = kube("api-resources", "-o", "wide", "--no-headers").stdout
    kinds: set[str] = set()
    for line in output.splitlines():
        parts = line.split()
        kinds.update(p for p in parts if p[:1].isupper() and p.isalpha() and p not in BOOLS)
    return kinds


# --- cluster-wide preparation -------------------------------------------------------------------


def install_crds(kube: Kubectl) -> Manifest:
    """`kubectl apply --server-side -f crds/`, then waits until the API serves the CRD."""
    kube("apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR))

    def established() -> Manifest | None:
        crd = get_json(kube, "crd", CR_RESOURCE)
        conditions = {
            c["type"]: c["status"] for c in ((crd.get("status") or {}).get("conditions") or [])
        }
        return crd if conditions.get("Established") == "True" else None

    return wait_for(established, timeout=60, what=f"CRD {CR_RESOURCE} to be Established")


def stub_crd(*, group: str, kind: str, plural: str) -> Manifest:
    """A schemaless namespaced CRD standing in for a third-party one (e.g. prometheus-operator)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "listKind": f"{kind}List"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }  # fmt: skip


# The production sample opts into these; a cluster with prometheus-operator serves them.
MONITORING_CRDS = (
    stub_crd(group="monitoring.coreos.com", kind="ServiceMonitor", plural="servicemonitors"),
    stub_crd(group="monitoring.coreos.com", kind="PrometheusRule", plural="prometheusrules"),
)


def install_monitoring_crds(kube: Kubectl) -> None:
    """Stand-ins for prometheus-operator's CRDs, waited on until served."""
    apply(kube, list(MONITORING_CRDS))
    for crd in MONITORING_CRDS:
        kube("wait", "--for=condition=Established", "--timeout=60s", "crd",
             crd["metadata"]["name"])  # fmt: skip


def operator_rbac_documents(user: str, *, lease_namespace: str) -> list[Manifest]:
    """The ClusterRole/Roles of manifests/base/rbac.yaml, plus bindings of each to `user`.

    The file's own bindings name the operator's ServiceAccount; the tests run the operator as a
    plain user instead, so RBAC is exercised exactly as written without a pod. Each test module's
    operator keeps its Lease in a namespace of its own, so the Roles (the leader-election Role,
    the only place that grants Leases) are placed there instead of the file's namespace.
    """
    documents = [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]
    roles = [copy.deepcopy(d) for d in documents if d.get("kind") in {"ClusterRole", "Role"}]
    if not any(r["kind"] == "ClusterRole" for r in roles):
        raise AssertionError(f"{RBAC_FILE} holds no ClusterRole for the operator")
    subject = {"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}
    bindings: list[Manifest] = []
    for role in roles:
        role_name = role["metadata"]["name"]
        metadata: Manifest = {"name": f"itest-{role_name}-{user}"}
        if role["kind"] == "Role":
            role["metadata"]["namespace"] = lease_namespace
            metadata["namespace"] = lease_namespace
        bindings.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": f"{role['kind']}Binding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"],
                        "name": role_name},
            "subjects": [subject],
        })  # fmt: skip
    return roles + bindings


def bind_operator_rbac(kube: Kubectl, *, lease_namespace: str, user: str = OPERATOR_USER) -> None:
    """Applies the operator's ClusterRole and Lease Role and binds them to `user`."""
    documents = operator_rbac_documents(user, lease_namespace=lease_namespace)
    for namespace in {d["metadata"]["namespace"] for d in documents if d["kind"] == "Role"}:
        ensure_namespace(kube, namespace)
    apply(kube, documents)


def mint_user_kubeconfig(user: str, *, folder: Path, cluster_dir: Path) -> Path:
    """A kubeconfig for another client-certificate user, signed by the local cluster's CA.

    Two operator processes under two user names make the audit log say which one wrote.
    """
    from tests.localcluster.kubeconfigs import kubeconfig_document, write_yaml
    from tests.localcluster.pki import ClientIdentity, KeyPair, make_client_cert

    layout = ClusterLayout(cluster_dir)
    ca = KeyPair(layout.pki / "ca.crt", layout.pki / "ca.key")
    if not ca.key.exists():
        raise AssertionError(f"no CA key at {ca.key}: a second user needs the local control plane")
    client = make_client_cert(folder, name=user, ca=ca, identity=ClientIdentity(user))
    server = yaml.safe_load(layout.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    path = folder / f"{user}.kubeconfig"
    write_yaml(path, kubeconfig_document(server=server, ca_cert=ca.cert, user=user, client=client))
    return path


# --- the operator subprocess --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1


def _die_with_test_process() -> None:
    # Between fork and exec: a test run killed before its teardown must not leave an operator
    # acting on the cluster, so the kernel signals the child when the test process dies.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class OperatorProcess:
    """`srvthreds-operator run` as a subprocess with its own kubeconfig and JSON log file."""

    kubeconfig: Path
    log_path: Path
    lease_namespace: str
    resync_seconds: int = 20
    extra_args: Sequence[str] = ()
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "srvthreds-operator"), "run", "--log-format", "json",
            "--leader-election", "--lease-namespace", self.lease_namespace,
            "--resync-seconds", str(self.resync_seconds),
            "--metrics-port", str(self.metrics_port),
            "--liveness-port", str(self.liveness_port),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise AssertionError("the operator is already running")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            log.write(f"--- started: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
                preexec_fn=_die_with_test_process,  # noqa: PLW1509
            )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise AssertionError("the operator was never started")
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signals the process and waits for it; a process that ignores SIGTERM is killed."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return f"(no operator log at {self.log_path})"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- operator log tail ({self.log_path}):\n" + "\n".join(map(readable, text))

    def report(self, what: str) -> str:
        """An assertion message with the operator's recent log attached."""
        state = "running" if self.running() else f"exited ({self.exit_description()})"
        return f"{what}\n(operator {state})\n{self.log_tail()}"

    def death(self) -> str | None:
        """Why waiting on this operator is pointless (it exited), else None."""
        if self.process is not None and self.process.poll() is not None:
            return self.report(f"the operator exited ({self.exit_description()})")
        return None

    def exit_description(self) -> str:
        if self.process is None:
            return "never started"
        return f"exit code {self.process.returncode}"

    def peak_rss_kib(self) -> int:
        """VmHWM of the live process (its peak resident set), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmHWM in /proc/{self.pid}/status")

    def metrics(self) -> str:
        """The Prometheus exposition text of its /metrics endpoint ("" when unreachable)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return str(response.read().decode())
        except (urllib.error.URLError, OSError):
            return ""


def readable(line: str, *, limit: int = 600) -> str:
    """One JSON log line as `time level logger: message` plus the exception's last line."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return line[:limit]
    if not isinstance(entry, dict):
        return line[:limit]
    text = f"{str(entry.get('time', ''))[11:23]} {entry.get('level')} {entry.get('logger')}: "
    text += str(entry.get("message", ""))
    exception = str(entry.get("exception", "")).strip().splitlines()
    if exception:
        text += f" [{exception[-1]}]"
    return text[:limit]


@contextlib.contextmanager
def running_operator(
    *,
    log_dir: Path,
    lease_namespace: str,
    kubeconfig: Path | None = None,
    name: str = "operator",
    **options: Any,
) -> Iterator[OperatorProcess]:
    """Starts the operator and always stops it; the log stays in `log_dir` for a post-mortem."""
    operator = OperatorProcess(
        kubeconfig=kubeconfig or ClusterLayout.default().operator_kubeconfig,
        log_path=log_dir / f"{name}.log",
        lease_namespace=lease_namespace,
        **options,
    )
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


# --- samples and what the operator should make of them ------------------------------------------


def load_samples() -> dict[str, Manifest]:
    """Every SrvThredsCluster in manifests/samples, keyed by file stem."""
    samples: dict[str, Manifest] = {}
    for path in sorted(SAMPLES_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "SrvThredsCluster":
                samples[path.stem] = document
    if not samples:
        raise AssertionError(f"no SrvThredsCluster samples in {SAMPLES_DIR}")
    return samples


def sample_stems() -> list[str]:
    """The sample files' stems, for parametrizing (safe at collection: no parsing)."""
    return sorted(path.stem for path in SAMPLES_DIR.glob("*.yaml"))


def _broker_modes(cr: Mapping[str, Any]) -> set[str]:
    brokers = cr.get("spec", {}).get("brokers", {})
    return {b.get("mode", "Managed") for b in brokers.values()} or {"Managed"}


def sample(kind: str) -> Manifest:
    """The sample named like `kind` ("minimal", "production", "external")."""
    samples = load_samples()
    for stem, document in samples.items():
        if kind in stem:
            return copy.deepcopy(document)
    if kind == "external":
        for document in samples.values():
            if "External" in _broker_modes(document):
                return copy.deepcopy(document)
    raise AssertionError(f"no sample for {kind!r} among {sorted(samples)} in {SAMPLES_DIR}")


def prepared(cr: Mapping[str, Any], *, namespace: str, name: str | None = None) -> Manifest:
    """A copy of a sample placed in `namespace` (and renamed), without server-set fields."""
    body = copy.deepcopy(dict(cr))
    metadata = {k: v for k, v in body.get("metadata", {}).items() if k in {"labels", "annotations"}}
    metadata["name"] = name or body["metadata"]["name"]
    metadata["namespace"] = namespace
    body["metadata"] = metadata
    body.pop("status", None)
    return body


def _references(node: Any, *, suffix: str) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key.lower().endswith(suffix) and isinstance(value, Mapping) and "name" in value:
                yield str(value["name"])
            else:
                yield from _references(value, suffix=suffix)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item, suffix=suffix)


def referenced_secrets(cr: Mapping[str, Any]) -> set[str]:
    return set(_references(cr.get("spec", {}), suffix="secretref"))


def referenced_config_maps(cr: Mapping[str, Any]) -> set[str]:
    return set(_references(cr.get("spec", {}), suffix="configmapref"))


def _fake_secret_data(name: str) -> dict[str, str]:
    # Keys cover the documented broker secret (url / password) and an S3 credentials secret.
    schemes = {"redis": "redis", "mongo": "mongodb", "rabbit": "amqp", "amqp": "amqp"}
    scheme = next((s for key, s in schemes.items() if key in name), "https")
    url = f"{scheme}://user:pw@{name}.example.invalid:1234/db"
    return {
        "url": url,
        "uri": url,
        "username": "user",
        "password": "pw",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "accessKeyId": "AKIAEXAMPLE",
        "secretAccessKey": "secret",
    }


def prerequisites(cr: Mapping[str, Any], *, namespace: str) -> list[Manifest]:
    """The user-owned Secrets and ConfigMaps a sample refers to (external brokers, S3, config)."""
    secrets = [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": name, "namespace": namespace},
         "stringData": _fake_secret_data(name)}
        for name in sorted(referenced_secrets(cr))
    ]  # fmt: skip
    config_maps = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": name, "namespace": namespace},
         "data": {"content.json": json.dumps({"revision": 1})}}
        for name in sorted(referenced_config_maps(cr))
    ]  # fmt: skip
    documents: list[Manifest] = [*secrets, *config_maps]
    return documents


def render(cr: Mapping[str, Any]) -> list[Manifest]:
    """`srvthreds-operator render -f`: exactly what the operator would apply for `cr`."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(dict(cr), handle)
    try:
        result = subprocess.run(
            [str(VENV_BIN / "srvthreds-operator"), "render", "-f", handle.name],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    finally:
        Path(handle.name).unlink()
    if result.returncode != 0:
        raise AssertionError(f"srvthreds-operator render failed: {result.stderr.strip()}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def resource_of(manifest: Mapping[str, Any]) -> str:
    kind = str(manifest["kind"])
    if kind in RESOURCE_OF_KIND:
        return RESOURCE_OF_KIND[kind]
    group = str(manifest["apiVersion"]).rpartition("/")[0]
    plural = kind.lower() + "s"
    return f"{plural}.{group}" if group else plural


def child_key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    return (str(manifest["kind"]), str(manifest["metadata"]["name"]))


# --- the custom resource ------------------------------------------------------------------------


def get_cluster(kube: Kubectl, name: str, *, namespace: str) -> Manifest | None:
    return get_object(kube, CR_RESOURCE, name, namespace=namespace)


def condition(cr: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for entry in (cr.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            found: Mapping[str, Any] = entry
            return found
    return None


def condition_is(cr: Mapping[str, Any], kind: str, status: str) -> bool:
    """The condition has `status` and was computed for the current generation."""
    entry = condition(cr, kind)
    return (
        entry is not None
        and entry.get("status") == status
        and entry.get("observedGeneration") == cr["metadata"]["generation"]
    )


def status_summary(cr: Mapping[str, Any] | None) -> str:
    if cr is None:
        return "the SrvThredsCluster does not exist"
    status = cr.get("status", {})
    conditions = {c.get("type"): (c.get("status"), c.get("reason"), c.get("observedGeneration"))
                  for c in status.get("conditions", []) or []}  # fmt: skip
    return (
        f"generation={cr['metadata'].get('generation')} "
        f"observedGeneration={status.get('observedGeneration')} phase={status.get('phase')} "
        f"conditions={conditions} lastError={status.get('lastError')!r}"
    )


def is_ready(cr: Mapping[str, Any] | None) -> bool:
    """Ready for the current generation: phase, observedGeneration and the Ready condition agree."""
    if cr is None:
        return False
    status = cr.get("status", {})
    return (
        status.get("phase") == "Ready"
        and status.get("observedGeneration") == cr["metadata"]["generation"]
        and condition_is(cr, "Ready", "True")
    )


def wait_ready(
    kube: Kubectl,
    name: str,
    *,
    namespace: str,
    operator: OperatorProcess | None = None,
    timeout: float = READY_TIMEOUT,
    what: str = "",
) -> Manifest:
    """Waits until the cluster is Ready for its current generation; returns it."""
    last: list[Manifest | None] = [None]

    def ready() -> Manifest | None:
        last[0] = get_cluster(kube, name, namespace=namespace)
        return last[0] if is_ready(last[0]) else None

    def explain() -> str:
        message = status_summary(last[0])
        return operator.report(message) if operator is not None else message

    return wait_for(
        ready,
        timeout=timeout,
        diagnostics=explain,
        abort=operator.death if operator is not None else None,
        what=what or f"SrvThredsCluster {namespace}/{name} to be Ready at its current generation",
    )


def wait_observed(
    kube: Kubectl, name: str, *, namespace: str, operator: OperatorProcess, what: str
) -> Manifest:
    """Waits until status.observedGeneration catches up with metadata.generation."""

    def observed() -> Manifest | None:
        cr = get_cluster(kube, name, namespace=namespace)
        if cr and cr.get("status", {}).get("observedGeneration") == cr["metadata"]["generation"]:
            return cr
        return None

    def explain() -> str:
        return operator.report(status_summary(get_cluster(kube, name, namespace=namespace)))

    return wait_for(
        observed, timeout=CHANGE_TIMEOUT, what=what, diagnostics=explain, abort=operator.death
    )


def create_cluster(kube: Kubectl, cr: Mapping[str, Any]) -> None:
    """Applies the sample's prerequisites, then the cluster itself."""
    namespace = cr["metadata"]["namespace"]
    apply(kube, [*prerequisites(cr, namespace=namespace), dict(cr)])


class StatusRecorder:
    """Records every version of one SrvThredsCluster from a watch, so transient phases are seen."""

    def __init__(self, kube: Kubectl, name: str, *, namespace: str) -> None:
        self._argv = [
            str(kube.binary), f"--kubeconfig={kube.kubeconfig}", "get", CR_RESOURCE, name,
            "-n", namespace, "--watch", "--output-watch-events", "-o", "json",
        ]  # fmt: skip
        self.seen: list[Manifest] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> StatusRecorder:
        self._process = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for chunk in self._process.stdout:
            buffer += chunk
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break
                buffer = buffer.lstrip()[end:]
                self.seen.append(event.get("object", {}))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()

    def phases_for_generation(self, generation: int) -> list[str]:
        return [
            str(cr.get("status", {}).get("phase"))
            for cr in self.seen
            if cr.get("status", {}).get("observedGeneration") == generation
        ]


# --- the audit log ------------------------------------------------------------------------------


class AuditLog:
    """Write requests in `.cluster/audit.log`, read from a mark (the policy logs writes only)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ClusterLayout.default().audit_log

    def mark(self) -> int:
        """The current end of the log; `writes_since(mark)` reads what was written after it."""
        return self.path.stat().st_size

    def writes_since(self, mark: int) -> list[AuditEvent]:
        with self.path.open(errors="replace") as handle:
            handle.seek(mark)
            return [e for e in parse_audit_lines(handle) if e.verb in WRITE_VERBS]


def writes_by(
    events: Iterable[AuditEvent],
    *,
    user: str,
    exclude_resources: frozenset[str] = frozenset({"leases"}),
) -> list[AuditEvent]:
    """Writes by `user`, leaving out leader-election lease renewals (the election's heartbeat)."""
    return [e for e in events if e.user == user and e.resource not in exclude_resources]


def describe(events: Iterable[AuditEvent]) -> str:
    return "\n".join(
        f"  {e.at:%H:%M:%S} {e.user} {e.verb} {e.resource} {e.namespace}/{e.name} -> {e.code}"
        for e in events
    )


# --- workloads ----------------------------------------------------------------------------------


def pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    template: Mapping[str, Any] = workload["spec"]["template"]
    if workload["kind"] == "CronJob":
        template = workload["spec"]["jobTemplate"]["spec"]["template"]
    return template


def config_hash(workload: Mapping[str, Any]) -> str | None:
    annotations = pod_template(workload).get("metadata", {}).get("annotations", {}) or {}
    value = annotations.get(CONFIG_HASH)
    return None if value is None else str(value)


def workload_settled(workload: Mapping[str, Any] | None) -> bool:
    """The controller has seen the latest spec and every wanted replica is updated and ready."""
    if workload is None:
        return False
    spec, status = workload["spec"], workload.get("status", {})
    wanted = spec.get("replicas", 1)
    return bool(
        status.get("observedGeneration") == workload["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == wanted
        and status.get("readyReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )


def secret_names_used(template: Mapping[str, Any]) -> set[str]:
    """Every Secret a pod template reads: env, envFrom and volumes."""
    spec = template.get("spec", {})
    names: set[str] = set()
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        for env in container.get("env", []) or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom", []) or []:
            if source.get("secretRef"):
                names.add(source["secretRef"]["name"])
    for volume in spec.get("volumes", []) or []:
        if volume.get("secret"):
            names.add(volume["secret"]["secretName"])
        for projected in (volume.get("projected") or {}).get("sources", []) or []:
            if projected.get("secret"):
                names.add(projected["secret"]["name"])
    return names


def decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


# --- one operator with everything it needs ------------------------------------------------------


@dataclass(frozen=True)
class OperatorEnv:
    """What a test module shares: admin kubectl, the running operator and the served kinds."""

    cluster: KubeCluster
    kube: Kubectl
    operator: OperatorProcess
    served_kinds: frozenset[str]
    lease_namespace: str


def prepare_cluster_for_operator(kube: Kubectl, *, lease_namespace: str) -> None:
    """CRDs installed, the operator's RBAC bound to its user, the Lease namespace present."""
    install_crds(kube)
    install_monitoring_crds(kube)
    ensure_namespace(kube, lease_namespace)
    bind_operator_rbac(kube, lease_namespace=lease_namespace)


@contextlib.contextmanager
def operator_environment(
    cluster: KubeCluster, *, log_dir: Path, name: str = "operator", **options: Any
) -> Iterator[OperatorEnv]:
    """A prepared cluster and one running operator (with `options` for it), stopped afterwards."""
    kube = admin_kubectl(cluster)
    lease_namespace = f"itest-lease-{name}-{os.getpid()}"
    prepare_cluster_for_operator(kube, lease_namespace=lease_namespace)
    served = frozenset(served_resources(kube))
    with running_operator(
        log_dir=log_dir,
        lease_namespace=lease_namespace,
        name=name,
        kubeconfig=cluster.operator_kubeconfig,
        **options,
    ) as operator:
        yield OperatorEnv(cluster, kube, operator, served, lease_namespace)
    kube("delete", "namespace", lease_namespace, "--wait=false", "--ignore-not-found", check=False)


def delete_clusters(kube: Kubectl, *, namespace: str) -> None:
    """Deletes a test's clusters and waits until they are gone, so no later operator sees them."""
    kube("delete", CR_RESOURCE, "--all", "-n", namespace, "--ignore-not-found", "--wait=true",
         "--timeout=60s", check=False)  # fmt: skip
