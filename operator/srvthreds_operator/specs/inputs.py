"""What the builders cannot know from the spec: generated credentials, content hashes, owner."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from srvthreds_operator import model
from srvthreds_operator.model import BrokerName, SrvThredsCluster

CREDENTIAL_KEYS: Mapping[BrokerName, tuple[str, ...]] = {
    "redis": ("password",),
    "mongodb": ("username", "password", "keyfile"),
    "rabbitmq": ("username", "password"),
}
_USERNAMES: Mapping[BrokerName, str] = {"mongodb": "root", "rabbitmq": "srvthreds"}


class MissingCredentialsError(KeyError):
    """A managed broker's credentials were not passed to the builders."""

    def __init__(self, broker: BrokerName, missing: list[str]) -> None:
        super().__init__(
            f"credentials of the managed {broker} lack {', '.join(missing)}: pass the existing "
            "Secret's data, or generate_credentials() for a new one"
        )
        self.broker = broker


@dataclass(frozen=True, kw_only=True)
class ReconcileInputs:
    """Inputs of the pure builders that come from the cluster's current state."""

    owner_uid: str | None = None
    """uid of the SrvThredsCluster; without it children carry no owner reference (render)."""
    credentials: Mapping[BrokerName, Mapping[str, str]] = field(default_factory=dict)
    """Plain-text data of each managed broker's credentials Secret (generated once)."""
    content_hashes: Mapping[str, str] = field(default_factory=dict)
    """Content hash of each referenced object, keyed "Kind/name" (see referenced_objects)."""

    def broker_credentials(self, broker: BrokerName) -> Mapping[str, str]:
        """The complete credentials of a managed broker, or MissingCredentialsError."""
        data = self.credentials.get(broker, {})
        missing = [key for key in CREDENTIAL_KEYS[broker] if not data.get(key)]
        if missing:
            raise MissingCredentialsError(broker, missing)
        return data


def generate_credentials(broker: BrokerName) -> dict[str, str]:
    """Fresh random credentials for a managed broker (called once; the Secret keeps them)."""
    data = {"password": secrets.token_urlsafe(24)}
    if broker in _USERNAMES:
        data["username"] = _USERNAMES[broker]
    if broker == "mongodb":
        data["keyfile"] = secrets.token_urlsafe(96)
    return data


def placeholder_credentials(broker: BrokerName) -> dict[str, str]:
    """Deterministic stand-ins used by `render`: the live operator generates real values once."""
    data = {"password": f"GENERATED-{broker.upper()}-PASSWORD"}
    if broker in _USERNAMES:
        data["username"] = _USERNAMES[broker]
    if broker == "mongodb":
        data["keyfile"] = "GENERATED-MONGODB-KEYFILE"
    return data


def credential_secret_names(cluster: SrvThredsCluster) -> dict[BrokerName, str]:
    """The generated-once credentials Secret of each managed broker."""
    return {
        broker: model.broker_credentials_name(cluster, broker)
        for broker in cluster.managed_brokers()
    }


def complete_credentials(
    cluster: SrvThredsCluster, *, existing: Mapping[BrokerName, Mapping[str, str] | None]
) -> dict[BrokerName, dict[str, str]]:
    """Existing credentials kept, missing keys generated: what the reconciler passes on."""
    result: dict[BrokerName, dict[str, str]] = {}
    for broker in cluster.managed_brokers():
        current = dict(existing.get(broker) or {})
        fresh = generate_credentials(broker)
        result[broker] = {key: current.get(key) or fresh[key] for key in CREDENTIAL_KEYS[broker]}
    return result


def referenced_objects(cluster: SrvThredsCluster) -> list[tuple[str, str]]:
    """(kind, name) of user objects whose content the pods use: a change must roll them."""
    spec = cluster.spec
    found: list[tuple[str, str]] = [
        ("ConfigMap", source.config_map_ref.name)
        for source in (spec.config.patterns, spec.config.run_config)
        if source is not None
    ]
    for broker in model.BROKERS:
        external = cluster.broker(broker).external
        if cluster.broker(broker).mode == "External" and external is not None:
            found.append(("Secret", external.secret_ref.name))
    destination = spec.backup.destination
    if spec.backup.enabled and destination is not None:
        found.append(("Secret", destination.s3.credentials_secret_ref.name))
    return list(dict.fromkeys(found))


def hash_key(kind: str, name: str) -> str:
    """The key of ReconcileInputs.content_hashes for one referenced object."""
    return f"{kind}/{name}"
