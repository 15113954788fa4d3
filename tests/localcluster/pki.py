"""Generates the cluster's certificates with the openssl command line: CA, serving, clients."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

_VALID_DAYS = "3650"
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]

# Python 3.13's strict verification wants key identifiers on every leaf, so they are always set.
_CA_EXTENSIONS = """\
[v3]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
"""

_LEAF_EXTENSIONS = """\
[v3]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{alt_names}
"""

APISERVER_SANS = (
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


class PkiError(RuntimeError):
    """openssl refused to make a certificate."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClientIdentity:
    """Who a client certificate says it is: user name (CN) and groups (O)."""

    user: str
    groups: tuple[str, ...] = ()

    def subject(self) -> str:
        return "/CN=" + self.user + "".join(f"/O={group}" for group in self.groups)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise PkiError(f"openssl {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")


def make_ca(folder: Path) -> KeyPair:
    """A self-signed EC P-256 certificate authority."""
    folder.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(folder / "ca.crt", folder / "ca.key")
    extensions = folder / "ca.ext"
    extensions.write_text(_CA_EXTENSIONS)
    _openssl(
        "req", "-x509", "-new", "-nodes", *_EC_KEY,
        "-keyout", str(pair.key), "-out", str(pair.cert), "-days", _VALID_DAYS,
        "-subj", "/CN=srvthreds-local-ca", "-config", str(extensions), "-extensions", "v3",
        cwd=folder,
    )  # fmt: skip
    return pair


def _make_leaf(
    folder: Path, *, name: str, ca: KeyPair, subject: str, usage: str, sans: tuple[str, ...] = ()
) -> KeyPair:
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    request = folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    alt_names = f"subjectAltName = {', '.join(sans)}" if sans else ""
    extensions.write_text(_LEAF_EXTENSIONS.format(usage=usage, alt_names=alt_names))
    _openssl(
        "req", "-new", "-nodes", *_EC_KEY, "-keyout", str(pair.key), "-out", str(request),
        "-subj", subject,
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(secrets.randbits(63)), "-days", _VALID_DAYS, "-out", str(pair.cert),
        "-extfile", str(extensions), "-extensions", "v3",
        cwd=folder,
    )  # fmt: skip
    request.unlink()
    extensions.unlink()
    return pair


def make_serving_cert(folder: Path, *, name: str, ca: KeyPair, sans: tuple[str, ...]) -> KeyPair:
    """A TLS server certificate for the given subject alternative names."""
    return _make_leaf(
        folder, name=name, ca=ca, subject=f"/CN={name}", usage="serverAuth", sans=sans
    )


def make_client_cert(folder: Path, *, name: str, ca: KeyPair, identity: ClientIdentity) -> KeyPair:
    """A client certificate the API server maps to `identity` (CN = user, O = groups)."""
    return _make_leaf(folder, name=name, ca=ca, subject=identity.subject(), usage="clientAuth")


def make_signing_key(folder: Path, *, name: str) -> KeyPair:
    """An EC key pair (the service-account token signer); `cert` holds the public key.

    kube-apiserver's --service-account-key-file reads no PKCS#8 private keys, hence the
    separate public key file.
    """
    key = folder / f"{name}.key"
    public = folder / f"{name}.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key),
             cwd=folder)  # fmt: skip
    _openssl("pkey", "-in", str(key), "-pubout", "-out", str(public), cwd=folder)
    return KeyPair(cert=public, key=key)
