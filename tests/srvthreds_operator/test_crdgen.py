"""The generated CRD: structural, complete, within limits, and identical to the committed file."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from srvthreds_operator import crdgen, model
from tests.srvthreds_operator.helpers import REPO_ROOT

# `kubectl apply` (client side) stores the object in an annotation limited to this many bytes.
LAST_APPLIED_LIMIT = 262144


def _nodes(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), Mapping):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def _root() -> Mapping[str, Any]:
    root: Mapping[str, Any] = crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def _at(path: str) -> Mapping[str, Any]:
    node = _root()
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _rules(path: str) -> list[str]:
    return [rule["rule"] for rule in _at(path).get("x-kubernetes-validations", [])]


def test_the_committed_crd_matches_the_models():
    committed = (REPO_ROOT / "crds" / crdgen.CRD_FILE_NAME).read_text(encoding="utf-8")
    assert committed == crdgen.crd_yaml(), (
        "crds/ is stale: run `srvthreds-operator crds --output crds`"
    )


def test_the_crd_fits_the_client_side_apply_annotation():
    as_json = json.dumps(crdgen.build_crd(), separators=(",", ":"))
    assert len(as_json.encode()) < LAST_APPLIED_LIMIT


def test_names_scope_and_subresources():
    spec = crdgen.build_crd()["spec"]
    assert crdgen.build_crd()["metadata"]["name"] == "srvthredsclusters.srvthreds.io"
    assert spec["group"] == "srvthreds.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["stc"]
    assert spec["names"]["categories"] == ["srvthreds"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.engine.replicas",
        "statusReplicasPath": ".status.components.engine.replicas",
        "labelSelectorPath": ".status.engineSelector",
    }


def test_printer_columns():
    columns = {
        c["name"]: c for c in crdgen.build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Version"]["jsonPath"] == ".spec.version"
    assert columns["Engine-Ready"]["jsonPath"] == ".status.components.engine.readyReplicas"
    assert columns["Engine-Desired"]["jsonPath"] == ".status.components.engine.desiredReplicas"
    assert columns["Age"]["type"] == "date"


def test_the_schema_is_structural():
    for path, node in _nodes(_root()):
        assert not {"$ref", "anyOf", "allOf", "oneOf"} & set(node), path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path


def test_defaults_are_scalars_only():
    for path, node in _nodes(_root()):
        if "default" in node:
            assert isinstance(node["default"], bool | int | float | str), path


def test_every_field_has_a_description():
    for path, node in _nodes(_root()):
        if path.startswith((".spec.", ".status.")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_free_form_fields_preserve_unknown_fields():
    for path in (
        "spec.engine.podTemplate",
        "spec.engine.scheduling.affinity",
        "spec.engine.autoscaling.behavior",
        "status.kopf",
    ):
        assert _at(path).get("x-kubernetes-preserve-unknown-fields") is True, path
    assert _at("spec.networkPolicy.ingressFrom.[]")["x-kubernetes-preserve-unknown-fields"]


def test_env_is_a_list_map_keyed_by_name_and_conditions_by_type():
    env = _at("spec.engine.env")
    assert env["x-kubernetes-list-type"] == "map"
    assert env["x-kubernetes-list-map-keys"] == ["name"]
    assert _at("spec.engine.env.[]")["required"] == ["name"]
    conditions = _at("status.conditions")
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_int_or_string_fields():
    assert _at("spec.updateStrategy.maxSurge")["x-kubernetes-int-or-string"] is True
    assert _at("spec.engine.disruptionBudget.maxUnavailable")["x-kubernetes-int-or-string"]


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("spec.engine.autoscaling", "self.minReplicas <= self.maxReplicas"),
        ("spec.sessionAgent.autoscaling", "self.minReplicas <= self.maxReplicas"),
        ("spec.engine", "!has(self.replicas) || self.replicas >= 0"),
        ("spec.brokers.redis", "self.mode != 'External' || has(self.external)"),
        ("spec.brokers.redis", "self.mode != 'Managed' || has(self.managed)"),
        ("spec.brokers.mongodb", "self.mode != 'External' || has(self.external)"),
        ("spec.brokers.rabbitmq", "self.mode != 'Managed' || has(self.managed)"),
        ("spec.brokers.mongodb.managed.storage.size", "self == oldSelf"),
        ("spec.backup", "!self.enabled || (has(self.schedule) && has(self.destination))"),
        ("spec.brokers.mongodb.managed", "self.members % 2 == 1"),
    ],
)
def test_cel_rules_are_generated_from_the_models(path, rule):
    assert rule in _rules(path)


def test_storage_class_is_immutable_once_set():
    (rule,) = _rules("spec.brokers.redis.managed.storage")
    assert "oldSelf.storageClassName" in rule


def test_the_schedule_rule_matches_cron_shapes():
    (rule,) = _rules("spec.backup.schedule")
    assert rule.startswith("self.matches(")
    assert _at("spec.backup.schedule")["maxLength"] <= 128


def test_every_rule_has_a_message_and_bounded_inputs():
    for path, node in _nodes(_root()):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], f"{path}: {rule['rule']} has no message"
        if node.get("type") == "array" and node.get("x-kubernetes-validations"):
            assert "maxItems" in node, path


def test_every_status_field_the_contract_names_is_declared():
    status = _at("status")["properties"]
    for field in (
        "observedGeneration",
        "phase",
        "conditions",
        "components",
        "engineSelector",
        "endpoints",
        "lastError",
        "lastReconcileTime",
        "kopf",
    ):
        assert field in status, field
    condition = _at("status.conditions.[]")["properties"]
    assert set(condition) >= {
        "type",
        "status",
        "reason",
        "message",
        "observedGeneration",
        "lastTransitionTime",
    }
    component = _at("status.components.engine")["properties"]
    assert set(component) == {"desiredReplicas", "replicas", "readyReplicas", "updatedReplicas"}
    assert _at("status.lastError")["maxLength"] == 1024


def test_version_is_required_and_the_name_is_bounded():
    assert _at("spec")["required"] == ["version"]
    (rule,) = _root()["x-kubernetes-validations"]
    assert rule["rule"] == f"self.metadata.name.size() <= {model.MAX_CLUSTER_NAME_LENGTH}"
    assert rule["message"] == model.NAME_LIMIT_MESSAGE


def test_the_crds_command_writes_the_file(tmp_path):
    from srvthreds_operator import cli

    assert cli.main(["crds", "--output", str(tmp_path)]) == 0
    written = yaml.safe_load((tmp_path / "srvthreds.io_srvthredsclusters.yaml").read_text())
    assert written == crdgen.build_crd()


def test_a_union_the_crd_cannot_express_is_refused():
    with pytest.raises(crdgen.SchemaError, match="union"):
        crdgen.structural_schema({"anyOf": [{"type": "integer"}, {"type": "string"}]})
