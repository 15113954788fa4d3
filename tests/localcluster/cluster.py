"""Brings the local control plane up and down: certificates, processes, readiness, fake nodes."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.localcluster.binaries import Binaries, resolve_binaries
from tests.localcluster.kubeconfigs import (
    AUDIT_POLICY,
    STORAGE_CLASS,
    kubeconfig_document,
    node_manifest,
    write_yaml,
)
from tests.localcluster.kubectl import Kubectl
from tests.localcluster.layout import ClusterLayout
from tests.localcluster.pki import (
    APISERVER_SANS,
    ClientIdentity,
    KeyPair,
    make_ca,
    make_client_cert,
    make_serving_cert,
    make_signing_key,
)
from tests.localcluster.processes import (
    ProcessRecord,
    append_pid_file,
    is_running,
    read_pid_file,
    start_process,
    stop_processes,
)
from tests.localcluster.waiting import WaitTimeoutError, http_ok, tls_context, wait_until

NODE_COUNT = 3
OPERATOR_USER = "srvthreds-operator"
ADMIN_USER = "admin"
LOG_TAIL_LINES = 25

# Each component gets its own identity so the audit log tells their writes apart; all but the
# operator are in system:masters because the controller-manager runs every controller under
# its own credentials (no --use-service-account-credentials).
IDENTITIES = {
    "admin": ClientIdentity(ADMIN_USER, ("system:masters",)),
    "kube-controller-manager": ClientIdentity(
        "system:kube-controller-manager", ("system:masters",)
    ),
    "kube-scheduler": ClientIdentity("system:kube-scheduler", ("system:masters",)),
    "kwok": ClientIdentity("kwok-controller", ("system:masters",)),
    "operator": ClientIdentity(OPERATOR_USER),
    # The aggregation layer's client; configuring it also gives the controller-manager and the
    # scheduler the request-header CA they otherwise log errors about every few seconds.
    "front-proxy": ClientIdentity("front-proxy-client"),
}


class StartupError(RuntimeError):
    """A component failed to start; the message names it, its log, and the log's last lines."""


@dataclass(frozen=True)
class ClusterEndpoints:
    """The loopback ports of one running control plane."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver}"


@dataclass(frozen=True)
class UpResult:
    """What `up` did: reused a healthy cluster or started one, and how long it took."""

    reused: bool
    seconds: float
    endpoints: ClusterEndpoints


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; all sockets are held together so the ports are distinct."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def log_tail(path: Path, *, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class _Pki:
    ca: KeyPair
    apiserver: KeyPair
    service_account: KeyPair
    clients: dict[str, KeyPair]


class LocalCluster:
    """One control plane whose files live in `layout.root`.

    `tie_to_parent=True` (tests, run-demo) makes the servers die with the Python process that
    started them; `make cluster-up` leaves them running until `down`.
    """

    def __init__(self, layout: ClusterLayout | None = None, *, tie_to_parent: bool = False) -> None:
        self.layout = layout or ClusterLayout.default()
        self.tie_to_parent = tie_to_parent

    # -- public API ------------------------------------------------------------------------

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl.for_kubeconfig(self.layout.kubeconfig)

    def endpoints(self) -> ClusterEndpoints | None:
        if not self.layout.state.exists():
            return None
        return ClusterEndpoints(**json.loads(self.layout.state.read_text()))

    def records(self) -> list[ProcessRecord]:
        return read_pid_file(self.layout.pids)

    def is_healthy(self) -> bool:
        """All recorded processes run and the API server answers /readyz."""
        endpoints, records = self.endpoints(), self.records()
        if endpoints is None or not records or not all(is_running(r) for r in records):
            return False
        return http_ok(f"{endpoints.server}/readyz", context=self._admin_tls())

    def up(self, *, binaries: Binaries | None = None) -> UpResult:
        """Starts the control plane, or reuses it when it is already up and healthy."""
        start = time.monotonic()
        with self._locked():
            endpoints = self.endpoints()
            if endpoints is not None and self.is_healthy():
                return UpResult(True, time.monotonic() - start, endpoints)
            self._stop_recorded()
            endpoints = self._start_with_retry(binaries or resolve_binaries())
        return UpResult(False, time.monotonic() - start, endpoints)

    def down(self) -> list[str]:
        """Stops every recorded process (also those of a crashed session); returns their names."""
        with self._locked():
            return self._stop_recorded()

    def status(self) -> dict[str, Any]:
        """A summary for `status`: per process whether it runs, and the API server's readiness."""
        endpoints = self.endpoints()
        return {
            "root": str(self.layout.root),
            "kubeconfig": str(self.layout.kubeconfig),
            "healthy": self.is_healthy(),
            "apiserver": endpoints.server if endpoints else None,
            "processes": {r.name: {"pid": r.pid, "running": is_running(r)} for r in self.records()},
        }

    # -- lifecycle internals ---------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with self.layout.lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _stop_recorded(self) -> list[str]:
        # Reverse start order: clients of the API server first, etcd last.
        records = list(reversed(self.records()))
        stopped = [r.name for r in records if is_running(r)]
        stop_processes(records)
        for path in (self.layout.pids, self.layout.state):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.layout.etcd_data, ignore_errors=True)
        return stopped

    def _clean_state_dir(self) -> None:
        for child in self.layout.root.iterdir():
            if child != self.layout.lock:
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def _start_with_retry(self, binaries: Binaries) -> ClusterEndpoints:
        # Ports are picked free, then released for the servers to bind: another cluster on the
        # machine may take one in between. That race deserves one more try, nothing else does.
        try:
            return self._start(binaries)
        except StartupError as error:
            if "address already in use" not in str(error):
                raise
        return self._start(binaries)

    def _start(self, binaries: Binaries) -> ClusterEndpoints:
        self._clean_state_dir()
        self.layout.logs.mkdir(parents=True)
        endpoints = ClusterEndpoints(*free_ports(5))
        pki = self._make_pki()
        self._write_configs(endpoints, pki)
        self.layout.state.write_text(json.dumps(asdict(endpoints)))
        try:
            self._start_etcd(binaries, endpoints)
            self._start_apiserver(binaries, endpoints, pki)
            self._start_controllers(binaries, endpoints, pki)
            self._start_kwok_and_nodes(binaries)
            self._wait_default_service_account()
        except BaseException:
            self._stop_recorded()
            raise
        return endpoints

    # -- certificates and configuration ----------------------------------------------------

    def _make_pki(self) -> _Pki:
        folder = self.layout.pki
        ca = make_ca(folder)
        clients = {
            name: make_client_cert(folder, name=f"{name}-client", ca=ca, identity=identity)
            for name, identity in IDENTITIES.items()
        }
        return _Pki(
            ca=ca,
            apiserver=make_serving_cert(folder, name="apiserver", ca=ca, sans=APISERVER_SANS),
            service_account=make_signing_key(folder, name="service-account"),
            clients=clients,
        )

    def _kubeconfig_path(self, name: str) -> Path:
        if name == "admin":
            return self.layout.kubeconfig
        if name == "operator":
            return self.layout.operator_kubeconfig
        return self.layout.component_kubeconfig(name)

    def _write_configs(self, endpoints: ClusterEndpoints, pki: _Pki) -> None:
        for name, client in pki.clients.items():
            if name == "front-proxy":  # the API server's own client: no kubeconfig
                continue
            document = kubeconfig_document(
                server=endpoints.server, ca_cert=pki.ca.cert, user=IDENTITIES[name].user,
                client=client,
            )  # fmt: skip
            write_yaml(self._kubeconfig_path(name), document)
        write_yaml(self.layout.audit_policy, AUDIT_POLICY)

    def _admin_tls(self) -> ssl.SSLContext:
        pki = self.layout.pki
        return tls_context(
            ca=pki / "ca.crt",
            client_cert=pki / "admin-client.crt",
            client_key=pki / "admin-client.key",
        )

    # -- processes -------------------------------------------------------------------------

    def _launch(self, name: str, binary: Path, args: list[str]) -> ProcessRecord:
        process = start_process(
            name,
            [str(binary), *args],
            log=self.layout.log_of(name),
            tie_to_parent=self.tie_to_parent,
        )
        record = ProcessRecord(name, process.pid, str(binary))
        append_pid_file(self.layout.pids, record)
        return record

    def _await(
        self, record: ProcessRecord, *, probe: str, check: Callable[[], bool], timeout: float
    ) -> None:
        def exited() -> str | None:
            return None if is_running(record) else "the process exited"

        try:
            wait_until(check, timeout=timeout, what=f"{record.name} {probe}", abort=exited)
        except WaitTimeoutError as error:
            log = self.layout.log_of(record.name)
            raise StartupError(
                f"{record.name} failed to start ({error}); log: {log}\n"
                f"--- last lines of {log} ---\n{log_tail(log)}"
            ) from error

    def _start_etcd(self, binaries: Binaries, endpoints: ClusterEndpoints) -> None:
        client = f"http://127.0.0.1:{endpoints.etcd_client}"
        peer = f"http://127.0.0.1:{endpoints.etcd_peer}"
        record = self._launch("etcd", binaries.etcd, [
            "--name=node0", f"--data-dir={self.layout.etcd_data}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=node0={peer}", "--unsafe-no-fsync=true", "--log-level=warn",
            f"--quota-backend-bytes={2 * 1024**3}",
        ])  # fmt: skip
        self._await(record, probe="/health", check=lambda: http_ok(f"{client}/health"), timeout=30)

    def _start_apiserver(self, binaries: Binaries, endpoints: ClusterEndpoints, pki: _Pki) -> None:
        sa_public, sa_key = pki.service_account.cert, pki.service_account.key
        record = self._launch("kube-apiserver", binaries.kube_apiserver, [
            f"--etcd-servers=http://127.0.0.1:{endpoints.etcd_client}",
            "--bind-address=127.0.0.1", f"--secure-port={endpoints.apiserver}",
            "--advertise-address=127.0.0.1",
            # Endpoints validation refuses loopback IPs, so the `kubernetes` Service gets none.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki.apiserver.cert}", f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_public}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=RBAC",
            "--allow-privileged=true", "--profiling=false",
            f"--audit-policy-file={self.layout.audit_policy}",
            f"--audit-log-path={self.layout.audit_log}", "--audit-log-format=json",
            f"--cert-dir={self.layout.root / 'apiserver-certs'}",
            *self._front_proxy_args(pki),
        ])  # fmt: skip
        context = self._admin_tls()
        self._await(
            record, probe="/readyz",
            check=lambda: http_ok(f"{endpoints.server}/readyz", context=context), timeout=120,
        )  # fmt: skip

    @staticmethod
    def _front_proxy_args(pki: _Pki) -> list[str]:
        proxy = pki.clients["front-proxy"]
        return [
            f"--requestheader-client-ca-file={pki.ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={proxy.cert}", f"--proxy-client-key-file={proxy.key}",
        ]  # fmt: skip

    def _component_args(self, name: str, port: int) -> list[str]:
        kubeconfig = self.layout.component_kubeconfig(name)
        return [
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        ]  # fmt: skip

    def _start_controllers(
        self, binaries: Binaries, endpoints: ClusterEndpoints, pki: _Pki
    ) -> None:
        manager = self._launch("kube-controller-manager", binaries.kube_controller_manager, [
            *self._component_args("kube-controller-manager", endpoints.controller_manager),
            f"--service-account-private-key-file={pki.service_account.key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--kube-api-qps=100", "--kube-api-burst=200", "--enable-hostpath-provisioner=true",
        ])  # fmt: skip
        scheduler = self._launch("kube-scheduler", binaries.kube_scheduler, [
            *self._component_args("kube-scheduler", endpoints.scheduler),
        ])  # fmt: skip
        insecure = tls_context(ca=None)
        for record, port in (
            (manager, endpoints.controller_manager),
            (scheduler, endpoints.scheduler),
        ):
            check = functools.partial(
                http_ok, f"https://127.0.0.1:{port}/healthz", context=insecure
            )
            self._await(record, probe="/healthz", check=check, timeout=60)

    def _start_kwok_and_nodes(self, binaries: Binaries) -> None:
        objects = [STORAGE_CLASS, *(node_manifest(index) for index in range(NODE_COUNT))]
        stream = {"apiVersion": "v1", "kind": "List", "items": objects}
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(stream))
        record = self._launch("kwok", binaries.kwok, [
            f"--kubeconfig={self.layout.component_kubeconfig('kwok')}",
            "--manage-all-nodes=true",
            # >0 so kwok renews node Leases: otherwise the node-lifecycle controller taints the
            # nodes NotReady after its grace period.
            "--node-lease-duration-seconds=40", "--cidr=10.244.0.0/16",
            *(f"--config={stage}" for stage in binaries.kwok_stages),
        ])  # fmt: skip
        self._await(record, probe="nodes Ready", check=self._nodes_ready, timeout=60)

    def _nodes_ready(self) -> bool:
        result = self.kubectl("get", "nodes", "-o", "json", check=False)
        if result.returncode != 0:
            return False
        ready = [
            node for node in json.loads(result.stdout)["items"]
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in ((node.get("status") or {}).get("conditions") or []))
        ]  # fmt: skip
        return len(ready) == NODE_COUNT

    def _wait_default_service_account(self) -> None:
        records = {r.name: r for r in self.records()}

        def exists() -> bool:
            result = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            return result.returncode == 0

        self._await(
            records["kube-controller-manager"], probe="the `default` ServiceAccount",
            check=exists, timeout=60,
        )  # fmt: skip
