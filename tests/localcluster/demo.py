"""`make run`: control plane, CRDs, the operator and the minimal sample, until Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from tests.localcluster.cluster import OPERATOR_USER, LocalCluster, free_ports, log_tail
from tests.localcluster.kubectl import Kubectl, KubectlError
from tests.localcluster.layout import (
    REPO_ROOT,
    ClusterLayout,
    existing_kubeconfig,
    use_existing_cluster,
)
from tests.localcluster.rbac import grant_operator_rbac
from tests.localcluster.waiting import WaitTimeoutError, wait_until

CRDS_DIR = REPO_ROOT / "crds"
SAMPLE = REPO_ROOT / "manifests" / "samples" / "minimal.yaml"
DEMO_NAMESPACE = "srvthreds-demo"
CRD_NAME = "srvthredsclusters.srvthreds.io"
CHILD_KINDS = "all,cm,secret,pvc,pdb,hpa,networkpolicy,cronjob"


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and what to look at."""


@dataclass(frozen=True)
class Target:
    """The cluster the demo runs against and the credentials the operator gets."""

    kubeconfig: Path
    operator_kubeconfig: Path
    is_local: bool


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def install_crds(kubectl: Kubectl) -> None:
    files = sorted(CRDS_DIR.glob("*.yaml"))
    if not files:
        raise DemoError(f"{CRDS_DIR} holds no CRD YAML: run `make crds` first")
    say(f"installing the CRDs from {CRDS_DIR}")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR))
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def operator_credentials(kubectl: Kubectl, *, target: Target) -> Path:
    if not target.is_local:
        return target.kubeconfig
    bindings = grant_operator_rbac(kubectl, user=OPERATOR_USER)
    if bindings:
        say(f"bound the operator's roles to user {OPERATOR_USER}: {', '.join(bindings)}")
        return target.operator_kubeconfig
    print(
        "WARNING: manifests/ holds no RBAC binding for the operator yet; "
        "the operator runs with the ADMIN kubeconfig",
        file=sys.stderr,
        flush=True,
    )
    return target.kubeconfig


def start_operator(*, kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    executable = Path(sys.executable).parent / "srvthreds-operator"
    if not executable.exists():
        raise DemoError(f"{executable} is missing: run `make install`")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    # Free ports, so the demo does not collide with whatever else listens on 8080/9090.
    liveness, metrics = free_ports(2)
    say(f"starting the operator (log: {log}; metrics: http://127.0.0.1:{metrics}/metrics)")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    argv = [str(executable), "run", "--log-format", "text",
            f"--liveness-port={liveness}", f"--metrics-port={metrics}"]  # fmt: skip
    with log.open("ab") as sink:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def stop_operator(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load_sample() -> dict[str, Any]:
    """The sample SrvThredsCluster, moved into the demo namespace."""
    if not SAMPLE.exists():
        raise DemoError(f"{SAMPLE} is missing")
    documents = [doc for doc in yaml.safe_load_all(SAMPLE.read_text()) if doc]
    if len(documents) != 1 or documents[0].get("kind") != "SrvThredsCluster":
        raise DemoError(f"{SAMPLE} should hold exactly one SrvThredsCluster")
    sample: dict[str, Any] = documents[0]
    sample["metadata"]["namespace"] = DEMO_NAMESPACE
    return sample


def apply_sample(kubectl: Kubectl, sample: dict[str, Any]) -> str:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))
    say(f"applying {SAMPLE.relative_to(REPO_ROOT)} in namespace {DEMO_NAMESPACE}")
    kubectl("apply", "-f", "-", input=yaml.safe_dump(sample))
    return str(sample["metadata"]["name"])


def cluster_object(kubectl: Kubectl, name: str) -> dict[str, Any]:
    result = kubectl("get", "stc", name, "-n", DEMO_NAMESPACE, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def is_ready(body: dict[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def wait_ready(kubectl: Kubectl, *, name: str, operator: subprocess.Popen[bytes], log: Path,
               timeout: float) -> float:  # fmt: skip
    def operator_exited() -> str | None:
        code = operator.poll()
        return None if code is None else f"the operator exited with code {code}"

    say(f"waiting up to {timeout:.0f} s for stc/{name} to be Ready")
    try:
        return wait_until(
            lambda: is_ready(cluster_object(kubectl, name)), timeout=timeout, interval=1.0,
            what=f"SrvThredsCluster {DEMO_NAMESPACE}/{name} condition Ready=True",
            abort=operator_exited,
        )  # fmt: skip
    except WaitTimeoutError as error:
        status = cluster_object(kubectl, name).get("status", {})
        raise DemoError(
            f"{error}\n--- status of stc/{name} ---\n{yaml.safe_dump(status) or '(none)'}"
            f"--- last lines of the operator log {log} ---\n{log_tail(log)}"
        ) from error


def print_summary(kubectl: Kubectl, *, name: str) -> None:
    scope = ["-n", DEMO_NAMESPACE]
    print(kubectl("get", "stc", *scope, "-o", "wide").stdout, flush=True)
    conditions = (cluster_object(kubectl, name).get("status") or {}).get("conditions") or []
    for condition in conditions:
        print(
            f"  {condition.get('type', '?'):<20} {condition.get('status', '?'):<6} "
            f"{condition.get('reason', '')}: {condition.get('message', '')}"
        )
    selector = f"app.kubernetes.io/instance={name}"
    print(kubectl("get", CHILD_KINDS, *scope, "-l", selector).stdout, flush=True)


def stream_log(log: Path, *, operator: subprocess.Popen[bytes]) -> int:
    """Prints the operator's log as it grows, until Ctrl-C or the operator exits."""
    say("streaming the operator log; press Ctrl-C to stop and tear everything down")
    with log.open("rb") as handle:
        while True:
            chunk = handle.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            code = operator.poll()
            if code is not None:
                sys.stdout.write(handle.read().decode(errors="replace"))
                print(f"the operator exited with code {code}", file=sys.stderr)
                return 1
            time.sleep(0.5)


def _points_elsewhere(layout: ClusterLayout) -> bool:
    """True when KUBECONFIG names another cluster than ours (after `make cluster-up` it is ours)."""
    configured = os.environ.get("KUBECONFIG")
    return bool(configured) and existing_kubeconfig().resolve() != layout.kubeconfig.resolve()


def _prepare_target(stack: contextlib.ExitStack, layout: ClusterLayout) -> Target:
    if use_existing_cluster() or _points_elsewhere(layout):
        kubeconfig = existing_kubeconfig()
        say(f"using the existing cluster of {kubeconfig}")
        return Target(kubeconfig, kubeconfig, is_local=False)
    cluster = LocalCluster(layout, tie_to_parent=True)
    say("starting the local control plane")
    result = cluster.up()
    if not result.reused:
        stack.callback(cluster.down)
        stack.callback(say, "stopping the local control plane")
    say(f"control plane {'reused' if result.reused else 'up'} in {result.seconds:.1f} s; "
        f"KUBECONFIG={layout.kubeconfig}")  # fmt: skip
    return Target(layout.kubeconfig, layout.operator_kubeconfig, is_local=True)


def _run(stack: contextlib.ExitStack, *, timeout: float) -> int:
    layout = ClusterLayout.default()
    target = _prepare_target(stack, layout)
    kubectl = Kubectl.for_kubeconfig(target.kubeconfig)
    install_crds(kubectl)
    credentials = operator_credentials(kubectl, target=target)
    log = layout.log_of("operator")
    operator = start_operator(kubeconfig=credentials, log=log)
    stack.callback(stop_operator, operator)
    name = apply_sample(kubectl, load_sample())
    if not target.is_local:
        stack.callback(kubectl, "delete", "stc", name, "-n", DEMO_NAMESPACE, check=False)
    seconds = wait_ready(kubectl, name=name, operator=operator, log=log, timeout=timeout)
    say(f"stc/{name} is Ready ({seconds:.1f} s after apply)")
    print_summary(kubectl, name=name)
    return stream_log(log, operator=operator)


def run_demo(*, timeout: float) -> int:
    """The body of `make run`; returns the exit code."""
    # A background job starts with SIGINT ignored; the demo must still stop on Ctrl-C/SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with contextlib.ExitStack() as stack:
        try:
            return _run(stack, timeout=timeout)
        except KeyboardInterrupt:
            say("interrupted: tearing down")
            return 0
        except (DemoError, KubectlError) as error:
            print(f"run-demo failed: {error}", file=sys.stderr)
            return 1
