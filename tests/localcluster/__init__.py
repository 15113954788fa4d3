"""A local Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)."""

from tests.localcluster.cluster import ClusterEndpoints, LocalCluster, StartupError

__all__ = ["ClusterEndpoints", "LocalCluster", "StartupError"]
