"""`srvthreds-operator render` and the golden files of the samples."""

from __future__ import annotations

import io

import pytest
import yaml

from srvthreds_operator import cli, crdgen, render
from srvthreds_operator.model import SpecError
from tests.srvthreds_operator.helpers import GOLDEN, REPO_ROOT, SAMPLE_NAMES, SAMPLES, body

REGENERATE = (
    "regenerate with: for s in minimal production external-brokers; do "
    ".venv/bin/srvthreds-operator render -f manifests/samples/$s.yaml "
    "> tests/srvthreds_operator/golden/$s.yaml; done"
)


def _run(argv: list[str], *, stdin_text: str = "") -> tuple[int, str]:
    out = io.StringIO()
    status = cli.main(argv, stdout=out, stdin=io.StringIO(stdin_text))
    return status, out.getvalue()


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
def test_render_of_each_sample_matches_its_golden_file(sample):
    status, output = _run(["render", "-f", str(SAMPLES / f"{sample}.yaml")])
    assert status == 0
    golden = (GOLDEN / f"{sample}.yaml").read_text(encoding="utf-8")
    assert output == golden, f"golden/{sample}.yaml is stale: {REGENERATE}"


@pytest.mark.parametrize("sample", SAMPLE_NAMES)
def test_render_output_is_a_yaml_stream_of_objects(sample):
    _, output = _run(["render", "-f", str(SAMPLES / f"{sample}.yaml")])
    assert output.startswith("---\n")
    documents = list(yaml.safe_load_all(output))
    assert len(documents) >= 10
    for document in documents:
        assert document["apiVersion"]
        assert document["kind"]
        assert document["metadata"]["name"]


def test_render_reads_stdin():
    text = yaml.safe_dump(body())
    status, output = _run(["render", "-f", "-"], stdin_text=text)
    assert status == 0
    assert "name: demo-engine" in output


def test_render_refuses_an_invalid_cluster_naming_the_field(capsys):
    text = yaml.safe_dump(body({"engine": {"replicas": -2}}))
    status, output = _run(["render", "-f", "-"], stdin_text=text)
    assert status == 2
    assert output == ""
    assert "spec.engine.replicas" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: ConfigMap\n", "no SrvThredsCluster document"),
        (": : :\n", "not valid YAML"),
        ("- a\n", "is not a mapping"),
    ],
)
def test_render_explains_unusable_input(text, message, capsys):
    status, _ = _run(["render", "-f", "-"], stdin_text=text)
    assert status == 2
    assert message in capsys.readouterr().err


def test_render_of_a_missing_file_names_it(tmp_path, capsys):
    status, _ = _run(["render", "-f", str(tmp_path / "nope.yaml")])
    assert status == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_render_manifests_checks_the_type():
    wrong = body() | {"apiVersion": "srvthreds.io/v2"}
    with pytest.raises(SpecError, match="apiVersion"):
        render.render_manifests(wrong)


def test_render_uses_placeholders_and_the_uid_when_given():
    manifests = render.render_manifests(body(uid="abc"))
    assert all(m["metadata"]["ownerReferences"][0]["uid"] == "abc" for m in manifests)


def test_render_help_explains_generated_credentials(capsys):
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    assert "placeholders" in capsys.readouterr().out


def test_the_reference_doc_matches_the_schema():
    committed = (REPO_ROOT / "docs" / "operator" / "crd-reference.md").read_text(encoding="utf-8")
    assert committed == crdgen.reference_markdown(), (
        "docs/operator/crd-reference.md is stale: run `srvthreds-operator reference-doc "
        "--output docs/operator/crd-reference.md`"
    )


def test_the_reference_doc_lists_every_spec_field():
    doc = crdgen.reference_markdown()
    for field in (
        "spec.engine.autoscaling.targetCPUUtilizationPercentage",
        "spec.brokers.mongodb.managed.replicaSetName",
        "spec.backup.destination.s3.credentialsSecretRef.name",
        "spec.monitoring.grafanaDashboard.enabled",
        "status.conditions[].lastTransitionTime",
    ):
        assert f"`{field}`" in doc, field


def test_reference_doc_command_writes_the_file(tmp_path):
    target = tmp_path / "ref.md"
    status, _ = _run(["reference-doc", "--output", str(target)])
    assert status == 0
    assert target.read_text(encoding="utf-8") == crdgen.reference_markdown()


def test_run_options_are_parsed():
    args = cli.build_parser().parse_args(
        [
            "run",
            "--namespace",
            "a",
            "--namespace",
            "b",
            "--liveness-port",
            "0",
            "--metrics-port",
            "9999",
            "--no-leader-election",
            "--lease-namespace",
            "ops",
            "--resync-seconds",
            "60",
            "--log-format",
            "text",
        ]
    )
    assert args.namespace == ["a", "b"]
    assert (args.liveness_port, args.metrics_port) == (0, 9999)
    assert args.leader_election is False
    assert (args.lease_namespace, args.resync_seconds, args.log_format) == ("ops", 60.0, "text")


def test_run_builds_runtime_settings_and_calls_the_runner_lazily(monkeypatch):
    from srvthreds_operator.settings import RuntimeSettings

    calls: list[RuntimeSettings] = []
    monkeypatch.setattr("srvthreds_operator.runner.run_operator", calls.append)
    status = cli.main(
        ["run", "--namespace", "a", "--metrics-port", "0", "--no-leader-election"],
        stdout=io.StringIO(),
    )
    assert status == 0
    (settings,) = calls
    assert tuple(settings.namespaces) == ("a",)
    assert settings.metrics_port == 0
    assert settings.leader_election is False
    assert settings.log_format == "json"


def test_run_passes_the_retry_back_off_options(monkeypatch):
    from srvthreds_operator.settings import RuntimeSettings

    calls: list[RuntimeSettings] = []
    monkeypatch.setattr("srvthreds_operator.runner.run_operator", calls.append)
    argv = ["run", "--retry-base-seconds", "0.5", "--retry-max-seconds", "20"]
    assert cli.main(argv, stdout=io.StringIO()) == 0
    (settings,) = calls
    assert (settings.retry_base_seconds, settings.retry_max_seconds) == (0.5, 20.0)


def test_run_reports_bad_settings_as_a_user_error(capsys):
    status = cli.main(["run", "--resync-seconds", "0"], stdout=io.StringIO())
    assert status == 2
    assert "--resync-seconds" in capsys.readouterr().err
