"""The `srvthreds-operator` command: render, crds, reference-doc and run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from srvthreds_operator import crdgen, model, render


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def _read_documents(source: str, *, stdin: TextIO) -> list[Mapping[str, Any]]:
    try:
        text = stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read {source}: {error.strerror}") from error
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise CliError(f"{source}: not valid YAML: {error}") from error
    for index, document in enumerate(documents):
        if not isinstance(document, Mapping):
            raise CliError(f"{source}: document {index + 1} is not a mapping")
    return documents


def _render(args: argparse.Namespace, *, stdout: TextIO, stdin: TextIO) -> None:
    documents = _read_documents(args.file, stdin=stdin)
    clusters = [document for document in documents if render.is_cluster(document)]
    if not clusters:
        raise CliError(f"{args.file}: no {model.KIND} document found")
    manifests = []
    for cluster in clusters:
        name = cluster.get("metadata", {}).get("name", "?")
        try:
            manifests += render.render_manifests(cluster)
        except model.SpecError as error:
            raise CliError(f"{args.file}: {model.KIND} {name}: {error}") from error
    stdout.write(render.dump_stream(manifests))


def _crds(args: argparse.Namespace, *, stdout: TextIO, stdin: TextIO) -> None:
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    target = output / crdgen.CRD_FILE_NAME
    target.write_text(crdgen.crd_yaml(), encoding="utf-8")
    stdout.write(f"wrote {target}\n")


def _reference_doc(args: argparse.Namespace, *, stdout: TextIO, stdin: TextIO) -> None:
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(crdgen.reference_markdown(), encoding="utf-8")
    stdout.write(f"wrote {target}\n")


def _run(args: argparse.Namespace, *, stdout: TextIO, stdin: TextIO) -> None:
    # Imported lazily: render and crds must work without kopf and a cluster.
    from srvthreds_operator.settings import RuntimeSettings

    options: dict[str, Any] = {
        "namespaces": tuple(args.namespace or ()),
        "leader_election": args.leader_election,
        "log_format": args.log_format,
    }
    for name in (
        "liveness_port",
        "metrics_port",
        "lease_namespace",
        "resync_seconds",
        "retry_base_seconds",
        "retry_max_seconds",
    ):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    try:
        settings = RuntimeSettings(**options)
    except ValueError as error:
        raise CliError(str(error)) from error
    from srvthreds_operator.runner import run_operator

    run_operator(settings)


def _add_run(subcommands: Any) -> None:
    run = subcommands.add_parser("run", help="run the operator (cluster-wide by default)")
    run.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="watch only this namespace (repeatable); default: every namespace",
    )
    run.add_argument("--liveness-port", type=int, help="port of /healthz (0 disables it)")
    run.add_argument("--metrics-port", type=int, help="port of /metrics (0 disables it)")
    run.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take a Lease so only one replica acts (default: on)",
    )
    run.add_argument("--lease-namespace", help="namespace of the leader-election Lease")
    run.add_argument("--resync-seconds", type=float, help="period of the full resync")
    run.add_argument(
        "--retry-base-seconds",
        type=float,
        help="back-off ceiling before the first retry of a failed pass (default 1)",
    )
    run.add_argument(
        "--retry-max-seconds", type=float, help="cap of the retry back-off (default 300)"
    )
    run.add_argument("--log-format", choices=("json", "text"), default="json")
    run.set_defaults(handler=_run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="srvthreds-operator", description="The SrvThredsCluster operator."
    )
    subcommands = parser.add_subparsers(dest="command", required=True)
    render_parser = subcommands.add_parser(
        "render",
        help="print the manifests the operator would apply, as a YAML stream",
        description="Print, without a cluster, every child the operator would apply for the "
        f"{model.KIND} documents in FILE (other documents are skipped). {render.RENDER_NOTE}",
    )
    render_parser.add_argument(
        "-f", "--file", required=True, metavar="FILE", help="a YAML file, or - for stdin"
    )
    render_parser.set_defaults(handler=_render)
    crds = subcommands.add_parser("crds", help="write the CRD YAML generated from the models")
    crds.add_argument("--output", required=True, metavar="DIR", help="directory to write to")
    crds.set_defaults(handler=_crds)
    doc = subcommands.add_parser("reference-doc", help="write the CRD reference (Markdown)")
    doc.add_argument("--output", required=True, metavar="FILE", help="file to write")
    doc.set_defaults(handler=_reference_doc)
    _add_run(subcommands)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args, stdout=stdout or sys.stdout, stdin=stdin or sys.stdin)
    except CliError as error:
        print(f"srvthreds-operator: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
