"""Builds the cluster's kubeconfig files and its audit policy (pure data, then one write)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tests.localcluster.pki import KeyPair

CONTEXT = "srvthreds-local"

# Metadata for writes only: enough to count write requests per user without request bodies;
# reads (get/list/watch) are omitted to keep the log small.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {"level": "None"},
    ],
}


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_document(
    *, server: str, ca_cert: Path, user: str, client: KeyPair
) -> dict[str, Any]:
    """A self-contained kubeconfig (certificates embedded) for one client-certificate user."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
    }


def write_yaml(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)


# PVCs (e.g. from StatefulSet volumeClaimTemplates) need a provisioner: the controller-manager's
# test-only host-path provisioner makes an empty folder under /tmp/hostpath_pv per volume and
# removes it when the PV is deleted. Immediate binding: no kubelet ever mounts anything.
STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}


def node_manifest(index: int) -> dict[str, Any]:
    """A kwok-managed fake node: distinct hostname and zone, no taint (every node here is fake)."""
    name = f"kwok-node-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": f"zone-{'abcdefghij'[index]}",
                "type": "kwok",
            },
        },
    }
