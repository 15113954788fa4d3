"""The SrvThredsCluster CRD, generated from the pydantic models (never edited by hand)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from srvthreds_operator import model

CRD_NAME = f"{model.PLURAL}.{model.GROUP}"
CRD_FILE_NAME = f"{model.GROUP}_{model.PLURAL}.yaml"

# Keys that are JSON Schema but not part of a structural Kubernetes schema, or are noise there.
_DROPPED_KEYS = frozenset({"title", "$defs", "examples"})
_SCALAR_TYPES = (bool, int, float, str)


class SchemaError(ValueError):
    """The model's JSON schema contains something a structural CRD schema cannot express."""


def _resolve_ref(ref: str, definitions: Mapping[str, Any]) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in definitions:
        raise SchemaError(f"unresolvable $ref {ref!r}")
    return dict(definitions[ref[len(prefix) :]])


def _collapse(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """Inline $ref and reduce Optional[X] (anyOf X|null) to X; sibling keys win."""
    merged = dict(node)
    if "$ref" in merged:
        target = _resolve_ref(merged.pop("$ref"), definitions)
        merged = target | merged
    if "anyOf" in merged:
        branches = [branch for branch in merged.pop("anyOf") if branch.get("type") != "null"]
        if len(branches) != 1:
            raise SchemaError(f"a union of {len(branches)} types is not structural: {branches}")
        merged = _collapse(branches[0], definitions) | merged
    return merged


def _scalar_default(merged: dict[str, Any]) -> None:
    # GitOps tools see drift when the API server fills in objects or lists: scalars only.
    default = merged.get("default")
    if default is None or not isinstance(default, _SCALAR_TYPES):
        merged.pop("default", None)


def _structural(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    merged = _collapse(node, definitions)
    _scalar_default(merged)
    result: dict[str, Any] = {
        key: value for key, value in merged.items() if key not in _DROPPED_KEYS
    }
    if "properties" in result:
        result["properties"] = {
            name: _structural(child, definitions) for name, child in result["properties"].items()
        }
    if "items" in result:
        result["items"] = _structural(result["items"], definitions)
    additional = result.pop("additionalProperties", None)
    if isinstance(additional, Mapping):
        result["additionalProperties"] = _structural(additional, definitions)
    elif additional is True:
        result["x-kubernetes-preserve-unknown-fields"] = True
    if result.get("x-kubernetes-preserve-unknown-fields") or "properties" in result:
        result.setdefault("type", "object")
    return result


def structural_schema(json_schema: Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema turned into a structural OpenAPI v3 schema for a CRD."""
    return _structural(json_schema, json_schema.get("$defs", {}))


def spec_schema() -> dict[str, Any]:
    """The structural schema of `spec`."""
    return structural_schema(model.SrvThredsClusterSpec.model_json_schema(by_alias=True))


def status_schema() -> dict[str, Any]:
    """The structural schema of `status` (every field declared, or the API server prunes it)."""
    return structural_schema(model.SrvThredsClusterStatus.model_json_schema(by_alias=True))


def _root_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A SrvThreds deployment: the engine, its agents and their brokers.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {model.MAX_CLUSTER_NAME_LENGTH}",
                "message": model.NAME_LIMIT_MESSAGE,
            }
        ],
    }


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        # JSONPath cannot join two numbers into "ready/desired", hence two columns.
        {
            "name": "Engine-Ready",
            "type": "integer",
            "jsonPath": ".status.components.engine.readyReplicas",
        },
        {
            "name": "Engine-Desired",
            "type": "integer",
            "jsonPath": ".status.components.engine.desiredReplicas",
        },
        {
            "name": "Sessions",
            "type": "integer",
            "priority": 1,
            "jsonPath": ".status.components.sessionAgent.readyReplicas",
        },
        {"name": "Paused", "type": "boolean", "priority": 1, "jsonPath": ".spec.paused"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "srvthreds",
                "app.kubernetes.io/part-of": "srvthreds",
            },
        },
        "spec": {
            "group": model.GROUP,
            "names": {
                "kind": model.KIND,
                "listKind": f"{model.KIND}List",
                "plural": model.PLURAL,
                "singular": model.SINGULAR,
                "shortNames": list(model.SHORT_NAMES),
                "categories": list(model.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": model.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.engine.replicas",
                            "statusReplicasPath": ".status.components.engine.replicas",
                            "labelSelectorPath": ".status.engineSelector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {"openAPIV3Schema": _root_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML document committed under crds/."""
    header = "# Generated by `srvthreds-operator crds` from the pydantic models. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)


# The reference document is generated from the same structural schema as the CRD, so the two
# cannot disagree; a unit test fails when docs/operator/crd-reference.md is stale.


def _type_of(node: Mapping[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = str(node.get("type", "object"))
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), Mapping):
        return f"map[string]{_type_of(node['additionalProperties'])}"
    if "enum" in node:
        return " or ".join(f"`{value}`" for value in node["enum"])
    return kind


def _constraints(node: Mapping[str, Any]) -> list[str]:
    labels = {
        "minimum": "min",
        "maximum": "max",
        "minLength": "min length",
        "maxLength": "max length",
        "maxItems": "max items",
        "pattern": "pattern",
    }
    found = [f"{label} `{node[key]}`" for key, label in labels.items() if key in node]
    if node.get("x-kubernetes-preserve-unknown-fields"):
        found.append("free-form")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
        found.append(f"list map keyed by `{keys}`")
    found += [f"rule: {rule['message']}" for rule in node.get("x-kubernetes-validations", [])]
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(node: Mapping[str, Any], *, path: str, rows: list[str]) -> None:
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}"
        default = f"`{json.dumps(child['default'])}`" if "default" in child else ""
        notes = _constraints(child)
        description = _cell(str(child.get("description", "")))
        if notes:
            description += "<br>" + _cell("; ".join(notes))
        flag = " (required)" if name in required else ""
        rows.append(
            f"| `{child_path}`{flag} | {_cell(_type_of(child))} | {_cell(default)} | "
            f"{description} |"
        )
        target = child.get("items", child) if child.get("type") == "array" else child
        suffix = "[]" if target is not child else ""
        _rows(target, path=child_path + suffix, rows=rows)


def _table(schema: Mapping[str, Any], *, path: str) -> list[str]:
    rows = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    _rows(schema, path=path, rows=rows)
    return rows


def reference_markdown() -> str:
    """docs/operator/crd-reference.md: every field of spec and status, from the CRD schema."""
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    scale = version["subresources"]["scale"]
    lines = [
        "# SrvThredsCluster CRD reference",
        "",
        "<!-- Generated by `srvthreds-operator reference-doc --output "
        "docs/operator/crd-reference.md` from the pydantic models. Do not edit. -->",
        "",
        f"`{model.API_VERSION}`, kind `{model.KIND}`, plural `{model.PLURAL}`, short name "
        f"`{model.SHORT_NAMES[0]}`, category `{model.CATEGORIES[0]}`, namespaced. Status "
        f"subresource; scale subresource on `{scale['specReplicasPath']}` (status "
        f"`{scale['statusReplicasPath']}`, selector `{scale['labelSelectorPath']}`).",
        "",
        "Defaults are applied by the API server (scalars only) and by the operator. "
        "Rules are CEL `x-kubernetes-validations` evaluated by the API server; the operator "
        "re-checks them and refuses a spec that breaks one with a `ReconcileSucceeded=False` "
        "condition naming the field.",
        "",
        "## Printer columns",
        "",
        "| Column | JSONPath | Priority |",
        "|---|---|---|",
    ]
    lines += [
        f"| {column['name']} | `{_cell(column['jsonPath'])}` | {column.get('priority', 0)} |"
        for column in version["additionalPrinterColumns"]
    ]
    lines += ["", "## Top-level rules", ""]
    lines += [f"- {rule['message']}" for rule in root.get("x-kubernetes-validations", [])]
    lines += ["", "## spec", ""]
    lines += _table(root["properties"]["spec"], path="spec")
    lines += ["", "## status", ""]
    lines += _table(root["properties"]["status"], path="status")
    return "\n".join(lines) + "\n"
