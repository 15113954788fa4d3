"""The reconciler's Blueprint implemented with the model and the pure builders (the spec seam)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from srvthreds_operator import model, specs
from srvthreds_operator.reconcile import InvalidSpecError, KindRef, Manifest
from srvthreds_operator.specs import inputs


class ModelBlueprint:
    """Parses with `model.parse_cluster` and builds with `specs.build_children`."""

    def parse(self, body: Mapping[str, Any]) -> model.SrvThredsCluster:
        try:
            return model.parse_cluster(body)
        except model.SpecError as error:
            raise InvalidSpecError(error.field_path, error.problem) from error

    def credential_secret_names(self, cluster: model.SrvThredsCluster) -> list[str]:
        return list(inputs.credential_secret_names(cluster).values())

    def referenced_objects(self, cluster: model.SrvThredsCluster) -> list[tuple[str, str]]:
        return inputs.referenced_objects(cluster)

    def build(
        self,
        cluster: model.SrvThredsCluster,
        *,
        credentials: Mapping[str, Mapping[str, str] | None],
        content_hashes: Mapping[str, str],
        owner_uid: str,
    ) -> list[Manifest]:
        existing = {
            broker: credentials.get(secret)
            for broker, secret in inputs.credential_secret_names(cluster).items()
        }
        reconcile_inputs = inputs.ReconcileInputs(
            owner_uid=owner_uid,
            credentials=inputs.complete_credentials(cluster, existing=existing),
            content_hashes=content_hashes,
        )
        try:
            return specs.build_children(cluster, inputs=reconcile_inputs)
        except model.SpecError as error:
            raise InvalidSpecError(error.field_path, error.problem) from error

    def prune_kinds(self) -> list[KindRef]:
        return [(str(api_version), str(kind)) for api_version, kind in specs.prune_kinds()]
