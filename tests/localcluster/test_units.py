"""Unit tests of the harness's pure parts: versions, pid files, audit events, RBAC, openssl PKI."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.localcluster.audit import parse_audit_lines, write_requests
from tests.localcluster.binaries import KWOK_STAGES, MissingBinariesError, resolve_binaries
from tests.localcluster.cluster import LocalCluster, StartupError
from tests.localcluster.kubeconfigs import node_manifest
from tests.localcluster.layout import ClusterLayout, load_versions, parse_versions
from tests.localcluster.pki import (
    APISERVER_SANS,
    ClientIdentity,
    make_ca,
    make_client_cert,
    make_serving_cert,
)
from tests.localcluster.processes import ProcessRecord, parse_pid_file
from tests.localcluster.rbac import user_bindings
from tests.localcluster.session import unique_namespace

BINARY_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def test_versions_file_pins_every_component() -> None:
    versions = load_versions()
    assert {"KUBE_VERSION", "ETCD_VERSION", "KWOK_VERSION", "HELM_VERSION"} <= set(versions)


def test_parse_versions_names_the_bad_line() -> None:
    assert parse_versions('# c\n\nA=1\nB="2"\n') == {"A": "1", "B": "2"}
    with pytest.raises(ValueError, match=r"f:2: expected KEY=value"):
        parse_versions("A=1\nnonsense\n", source="f")


def test_pid_file_round_trip_skips_truncated_lines() -> None:
    record = ProcessRecord("etcd", 42, "/cache/etcd/bin/etcd")
    text = record.line() + "kwok 4"
    assert parse_pid_file(text) == [record]


def audit_line(user: str, verb: str, *, at: str, stage: str = "ResponseComplete") -> str:
    return json.dumps({
        "stage": stage, "verb": verb, "user": {"username": user},
        "requestURI": "/api/v1/namespaces/n/configmaps",
        "objectRef": {"resource": "configmaps", "namespace": "n", "name": "c"},
        "responseStatus": {"code": 201}, "requestReceivedTimestamp": at,
    })  # fmt: skip


def test_write_requests_filters_user_verb_and_time() -> None:
    lines = [
        audit_line("op", "create", at="2026-01-01T00:00:00.000000Z"),
        audit_line("op", "patch", at="2026-01-01T00:01:00.000000Z"),
        audit_line("op", "get", at="2026-01-01T00:01:00.000000Z"),
        audit_line("admin", "create", at="2026-01-01T00:01:00.000000Z"),
        audit_line("op", "update", at="2026-01-01T00:01:00.000000Z", stage="ResponseStarted"),
        '{"stage": "Respon',  # a line the API server was still writing
    ]
    since = dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=dt.UTC)
    events = write_requests(parse_audit_lines(lines), user="op", since=since)
    assert [(e.verb, e.resource, e.namespace, e.code) for e in events] == [
        ("patch", "configmaps", "n", 201)
    ]


def test_user_bindings_copy_service_account_bindings_to_the_user() -> None:
    documents: list[dict[str, Any]] = [
        {"kind": "ClusterRole", "metadata": {"name": "op"}},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "op"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "op"},
         "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "sys"}]},
        {"kind": "RoleBinding", "metadata": {"name": "lease", "namespace": "sys"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease"},
         "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "sys"}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "viewers"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "v"},
         "subjects": [{"kind": "Group", "name": "devs"}]},
    ]  # fmt: skip
    bindings = user_bindings(documents, user="srvthreds-operator")
    assert [(b["kind"], b["metadata"]) for b in bindings] == [
        ("ClusterRoleBinding", {"name": "op-local-user"}),
        ("RoleBinding", {"name": "lease-local-user", "namespace": "sys"}),
    ]
    assert all(b["subjects"][0] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "srvthreds-operator"
    } for b in bindings)  # fmt: skip


def test_unique_namespace_is_a_valid_dns_label() -> None:
    name = unique_namespace("test_thing[param-A/" + "x" * 80 + "]")
    assert len(name) <= 63
    assert name == name.lower()
    assert all(ch.isalnum() or ch == "-" for ch in name)
    assert name[0].isalpha()
    assert name[-1].isalnum()


def test_nodes_have_distinct_hostnames_and_zones() -> None:
    nodes = [node_manifest(i) for i in range(3)]
    labels = [node["metadata"]["labels"] for node in nodes]
    assert [lbl["kubernetes.io/hostname"] for lbl in labels] == [
        "kwok-node-0", "kwok-node-1", "kwok-node-2",
    ]  # fmt: skip
    assert [lbl["topology.kubernetes.io/zone"] for lbl in labels] == ["zone-a", "zone-b", "zone-c"]
    assert all("taints" not in node.get("spec", {}) for node in nodes)


def openssl_text(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_certificates_chain_to_the_ca_with_the_right_names(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    server = make_serving_cert(tmp_path, name="apiserver", ca=ca, sans=APISERVER_SANS)
    client = make_client_cert(
        tmp_path, name="admin", ca=ca, identity=ClientIdentity("admin", ("system:masters",))
    )
    for leaf in (server, client):
        verify = subprocess.run(
            ["openssl", "verify", "-x509_strict", "-CAfile", str(ca.cert), str(leaf.cert)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
    server_text = openssl_text(server.cert)
    assert "IP Address:127.0.0.1" in server_text
    assert "DNS:kubernetes.default.svc.cluster.local" in server_text
    assert "TLS Web Server Authentication" in server_text
    client_text = openssl_text(client.cert)
    assert "CN = admin, O = system:masters" in client_text
    assert "TLS Web Client Authentication" in client_text
    assert "Authority Key Identifier" in client_text


def fake_assets(folder: Path, *, etcd_script: str = "#!/bin/sh\nexit 0\n") -> Path:
    """A KUBEBUILDER_ASSETS folder: executables that stand in for the real binaries."""
    folder.mkdir()
    for name in BINARY_NAMES:
        binary = folder / name
        binary.write_text(etcd_script if name == "etcd" else "#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    for stage in KWOK_STAGES:
        (folder / "kwok-stages" / stage).parent.mkdir(parents=True, exist_ok=True)
        (folder / "kwok-stages" / stage).write_text("kind: Stage\n")
    return folder


def test_kubebuilder_assets_win_over_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = fake_assets(tmp_path / "assets")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    monkeypatch.setenv("SRVTHREDS_CACHE", str(tmp_path / "empty-cache"))
    binaries = resolve_binaries(build_missing=False)
    assert binaries.kube_apiserver == assets / "kube-apiserver"
    assert binaries.etcd == assets / "etcd"
    assert binaries.kwok_stages[0] == assets / "kwok-stages" / KWOK_STAGES[0]


def test_missing_binaries_name_the_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("SRVTHREDS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("GOMODCACHE_OVERRIDE", str(tmp_path / "empty-gomod"))
    with pytest.raises(MissingBinariesError, match=r"build-tools\.sh etcd kube kwok"):
        resolve_binaries(build_missing=False)


def test_a_failed_start_names_the_process_and_shows_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = fake_assets(
        tmp_path / "assets", etcd_script="#!/bin/sh\necho 'etcd: disk on fire' >&2\nexit 3\n"
    )
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    cluster = LocalCluster(ClusterLayout(tmp_path / "cluster"))
    with pytest.raises(StartupError) as failure:
        cluster.up(binaries=resolve_binaries(build_missing=False))
    message = str(failure.value)
    assert message.startswith("etcd failed to start")
    assert str(cluster.layout.log_of("etcd")) in message
    assert "etcd: disk on fire" in message
    assert not cluster.layout.pids.exists(), "a failed start leaves no recorded process"


def test_a_port_taken_meanwhile_gets_one_more_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = tmp_path / "attempts"
    script = (
        f"#!/bin/sh\necho x >> {attempts}\n"
        "echo 'listen tcp: bind: address already in use'\nexit 1\n"
    )
    monkeypatch.setenv(
        "KUBEBUILDER_ASSETS", str(fake_assets(tmp_path / "assets", etcd_script=script))
    )
    cluster = LocalCluster(ClusterLayout(tmp_path / "cluster"))
    with pytest.raises(StartupError, match="address already in use"):
        cluster.up(binaries=resolve_binaries(build_missing=False))
    assert attempts.read_text().count("x") == 2
