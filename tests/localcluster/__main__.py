"""`python -m tests.localcluster up|down|status|run-demo|measure`: the control plane's CLI."""

from __future__ import annotations

import argparse
import json
import sys

from tests.localcluster.binaries import MissingBinariesError
from tests.localcluster.cluster import LocalCluster, StartupError
from tests.localcluster.pki import PkiError


def _up(args: argparse.Namespace) -> int:
    cluster = LocalCluster()
    result = cluster.up()
    verb = "already running" if result.reused else f"started in {result.seconds:.1f} s"
    print(f"control plane {verb}: {result.endpoints.server}", file=sys.stderr)
    print(f"kubeconfig: {cluster.layout.kubeconfig}", file=sys.stderr)
    print(f"operator kubeconfig: {cluster.layout.operator_kubeconfig}", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.layout.kubeconfig}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = LocalCluster().down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = LocalCluster().status()
    print(json.dumps(status, indent=2))
    return 0 if status["healthy"] else 1


def _run_demo(args: argparse.Namespace) -> int:
    from tests.localcluster.demo import run_demo

    return run_demo(timeout=args.timeout)


def _measure(args: argparse.Namespace) -> int:
    from tests.localcluster.measure import run_measurements

    for what, seconds in run_measurements().items():
        print(f"{what:<32} {seconds:7.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.localcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the control plane (no-op when healthy)").set_defaults(
        handler=_up
    )
    commands.add_parser("down", help="stop every recorded process").set_defaults(handler=_down)
    commands.add_parser("status", help="show processes and health").set_defaults(handler=_status)
    commands.add_parser(
        "measure", help="time the cluster's behaviours (for the docs)"
    ).set_defaults(handler=_measure)
    demo = commands.add_parser("run-demo", help="control plane + operator + sample until Ctrl-C")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for Ready")
    demo.set_defaults(handler=_run_demo)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (StartupError, MissingBinariesError, PkiError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
