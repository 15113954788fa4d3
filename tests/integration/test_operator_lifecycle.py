"""The operator's life cycle on a real API server, with one operator process for the module."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.integration.operator_helpers import (
    CHANGE_TIMEOUT,
    CR_RESOURCE,
    FIELD_MANAGER,
    GC_TIMEOUT,
    INSTANCE_LABEL,
    Manifest,
    OperatorEnv,
    StatusRecorder,
    apply,
    child_key,
    condition,
    condition_is,
    config_hash,
    create_cluster,
    decoded,
    delete_clusters,
    get_cluster,
    get_object,
    list_objects,
    load_samples,
    merge_patch,
    operator_environment,
    pod_template,
    prepared,
    referenced_config_maps,
    render,
    resource_of,
    sample,
    sample_stems,
    secret_names_used,
    status_summary,
    wait_for,
    wait_observed,
    wait_ready,
    workload_settled,
)
from tests.localcluster.session import KubeCluster

pytestmark = pytest.mark.integration

APPS = ("engine", "persistence-agent", "session-agent")
BROKERS = ("redis", "mongodb", "rabbitmq")


@pytest.fixture(scope="module")
def env(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorEnv]:
    with operator_environment(
        kube_cluster, log_dir=tmp_path_factory.mktemp("operator-lifecycle")
    ) as shared:
        yield shared


@pytest.fixture
def ns(env: OperatorEnv, namespace: str) -> Iterator[str]:
    """The test's namespace; its clusters are deleted before the namespace goes."""
    yield namespace
    delete_clusters(env.kube, namespace=namespace)


# --- small helpers bound to the shared environment ---


def start(env: OperatorEnv, cr: Manifest) -> Manifest:
    """Creates the cluster (with what it refers to) and waits until it is Ready."""
    create_cluster(env.kube, cr)
    return wait_ready(
        env.kube,
        cr["metadata"]["name"],
        namespace=cr["metadata"]["namespace"],
        operator=env.operator,
    )


def workload(env: OperatorEnv, name: str, *, namespace: str, kind: str = "Deployment") -> Manifest:
    found = get_object(
        env.kube, resource_of({"kind": kind, "apiVersion": "apps/v1"}), name, namespace=namespace
    )
    assert found is not None, env.operator.report(f"{kind} {namespace}/{name} does not exist")
    return found


def app_workloads(env: OperatorEnv, name: str, *, namespace: str) -> dict[str, Manifest]:
    return {
        "engine": workload(env, f"{name}-engine", namespace=namespace),
        "persistence-agent": workload(env, f"{name}-persistence-agent", namespace=namespace),
        "session-agent": workload(
            env, f"{name}-session-agent", namespace=namespace, kind="StatefulSet"
        ),
    }


def patch_spec(env: OperatorEnv, name: str, *, namespace: str, spec: Mapping[str, Any]) -> int:
    """Merge-patches the cluster's spec; returns the new generation."""
    merge_patch(env.kube, CR_RESOURCE, name, namespace=namespace, patch={"spec": dict(spec)})
    cr = get_cluster(env.kube, name, namespace=namespace)
    assert cr is not None
    generation: int = cr["metadata"]["generation"]
    return generation


def wait_workload(
    env: OperatorEnv,
    name: str,
    *,
    namespace: str,
    what: str,
    kind: str = "Deployment",
    check: Any,
) -> Manifest:
    """Waits until `check(workload)` holds for the named workload."""
    resource = resource_of({"kind": kind, "apiVersion": "apps/v1"})
    last: list[Manifest | None] = [None]

    def holds() -> Manifest | None:
        last[0] = get_object(env.kube, resource, name, namespace=namespace)
        return last[0] if last[0] is not None and check(last[0]) else None

    def explain() -> str:
        seen = last[0]
        summary = (
            "absent"
            if seen is None
            else json.dumps(
                {"spec.replicas": seen["spec"].get("replicas"), "status": seen.get("status")}
            )
        )
        return env.operator.report(f"last seen {kind} {name}: {summary}")

    return wait_for(
        holds, timeout=CHANGE_TIMEOUT, what=what, diagnostics=explain, abort=env.operator.death
    )


def wait_cluster(env: OperatorEnv, name: str, *, namespace: str, what: str, check: Any) -> Manifest:
    """Waits until `check(cluster)` holds; the status and operator log explain a timeout."""

    def holds() -> Manifest | None:
        found = get_cluster(env.kube, name, namespace=namespace)
        return found if found is not None and check(found) else None

    def explain() -> str:
        return env.operator.report(status_summary(get_cluster(env.kube, name, namespace=namespace)))

    return wait_for(
        holds, timeout=CHANGE_TIMEOUT, what=what, diagnostics=explain, abort=env.operator.death
    )


def owned_children(env: OperatorEnv, cr: Mapping[str, Any]) -> list[Manifest]:
    """What `render` says the operator makes for this cluster, minus kinds this API lacks."""
    body = {k: v for k, v in cr.items() if k != "status"}
    body["metadata"] = {k: v for k, v in cr["metadata"].items() if k != "managedFields"}
    return [m for m in render(body) if m["kind"] in env.served_kinds]


def containers(template: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = template["spec"]["containers"]
    return found


def controller_owner(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in obj["metadata"].get("ownerReferences", []) if o.get("controller")]


# --- 2. every child, owned, and Ready ---


@pytest.mark.parametrize("stem", sample_stems())
def test_each_sample_gets_every_child_with_owner_references_and_becomes_ready(
    env: OperatorEnv, ns: str, stem: str
) -> None:
    cr = start(env, prepared(load_samples()[stem], namespace=ns))
    name, uid = cr["metadata"]["name"], cr["metadata"]["uid"]

    children = owned_children(env, cr)
    assert {("Deployment", f"{name}-engine"), ("StatefulSet", f"{name}-session-agent")} <= {
        child_key(c) for c in children
    }
    for child in children:
        kind, child_name = child_key(child)
        live = get_object(env.kube, resource_of(child), child_name, namespace=ns)
        assert live is not None, env.operator.report(f"{kind} {child_name} was not created")
        owners = controller_owner(live)
        assert [(o["kind"], o["uid"]) for o in owners] == [("SrvThredsCluster", uid)], (
            f"{kind} {child_name} has controller owners {owners}"
        )
        labels = live["metadata"].get("labels", {})
        assert labels.get(INSTANCE_LABEL) == name, f"{kind} {child_name} labels {labels}"
        assert labels.get("app.kubernetes.io/managed-by") == "srvthreds-operator"
        assert labels.get("app.kubernetes.io/part-of") == "srvthreds"

    status = cr["status"]
    assert status["observedGeneration"] == cr["metadata"]["generation"]
    for component, counts in status["components"].items():
        assert counts.get("readyReplicas", 0) == counts.get("desiredReplicas", 0), (
            f"{component}: {counts}"
        )
    pods = list_objects(env.kube, ["pods"], namespace=ns, selector=f"{INSTANCE_LABEL}={name}")
    not_ready = [p["metadata"]["name"] for p in pods if not _pod_ready(p)]
    assert pods, "no pods were made"
    assert not_ready == [], f"pods not Ready although the cluster is: {not_ready}"


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in ((pod.get("status") or {}).get("conditions") or [])
    )


# --- 3. drift ---


def test_a_deleted_child_and_an_edited_owned_field_are_restored(env: OperatorEnv, ns: str) -> None:
    cr = start(env, prepared(sample("minimal"), namespace=ns))
    name = cr["metadata"]["name"]

    config = get_object(env.kube, "configmaps", f"{name}-config", namespace=ns)
    assert config is not None
    env.kube("delete", "configmap", f"{name}-config", "-n", ns)
    wait_for(
        lambda: (
            (found := get_object(env.kube, "configmaps", f"{name}-config", namespace=ns))
            and found["metadata"]["uid"] != config["metadata"]["uid"]
        ),
        timeout=CHANGE_TIMEOUT,
        what=f"ConfigMap {name}-config to be recreated",
        diagnostics=lambda: env.operator.report("drift: deleted ConfigMap"),
    )

    engine = workload(env, f"{name}-engine", namespace=ns)
    container = containers(pod_template(engine))[0]
    env.kube(
        "set",
        "image",
        f"deployment/{name}-engine",
        f"{container['name']}=example.invalid/drifted:0",
        "-n",
        ns,
    )
    wait_workload(
        env,
        f"{name}-engine",
        namespace=ns,
        what=f"the engine image to be set back to {container['image']}",
        check=lambda d: containers(pod_template(d))[0]["image"] == container["image"],
    )


# --- 4. updates ---


def test_image_replicas_and_resources_changes_reach_the_children_through_progressing(
    env: OperatorEnv, ns: str
) -> None:
    cr = start(env, prepared(sample("minimal"), namespace=ns))
    name = cr["metadata"]["name"]
    replicas = int(cr["spec"].get("engine", {}).get("replicas", 1)) + 1

    with StatusRecorder(env.kube, name, namespace=ns) as recorder:
        generation = patch_spec(
            env,
            name,
            namespace=ns,
            spec={
                "image": {"tag": "9.9.9", "digest": None},
                "engine": {
                    "replicas": replicas,
                    "resources": {"requests": {"cpu": "123m", "memory": "130Mi"}},
                },
            },
        )
        for component, deployed in app_workloads(env, name, namespace=ns).items():
            wait_workload(
                env,
                deployed["metadata"]["name"],
                namespace=ns,
                kind=deployed["kind"],
                what=f"the {component} image to end with :9.9.9",
                check=lambda w: all(
                    c["image"].endswith(":9.9.9") for c in containers(pod_template(w))
                ),
            )
        engine = wait_workload(
            env,
            f"{name}-engine",
            namespace=ns,
            what=f"engine replicas {replicas}, cpu 123m",
            check=lambda d: (
                d["spec"]["replicas"] == replicas
                and containers(pod_template(d))[0]["resources"]["requests"]["cpu"] == "123m"
            ),
        )
        wait_ready(env.kube, name, namespace=ns, operator=env.operator)
        assert engine["spec"]["replicas"] == replicas
        wait_for(
            lambda: recorder.phases_for_generation(generation)[-1:] == ["Ready"],
            timeout=30,
            what="the watch to deliver the Ready status",
        )

    phases = recorder.phases_for_generation(generation)
    assert "Progressing" in phases, f"phases seen for generation {generation}: {phases}"
    assert phases[-1] == "Ready", phases
    assert phases.index("Progressing") < len(phases) - 1


def test_changing_a_config_map_the_pods_use_rolls_them(env: OperatorEnv, ns: str) -> None:
    cr = prepared(sample("minimal"), namespace=ns)
    config_maps = sorted(referenced_config_maps(cr))
    if not config_maps:
        cr["spec"].setdefault("config", {})["patterns"] = {"configMapRef": {"name": "patterns"}}
        config_maps = ["patterns"]
    cr = start(env, cr)
    name = cr["metadata"]["name"]
    before = config_hash(workload(env, f"{name}-engine", namespace=ns))
    assert before, "the engine pod template carries no srvthreds.io/config-hash annotation"

    apply(
        env.kube,
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": config_maps[0], "namespace": ns},
                "data": {"content.json": '{"revision": 2}'},
            }
        ],
    )

    rolled = wait_workload(
        env,
        f"{name}-engine",
        namespace=ns,
        what=f"the engine's config hash to change after ConfigMap {config_maps[0]} changed",
        check=lambda d: config_hash(d) not in {None, before},
    )
    wait_workload(
        env,
        f"{name}-engine",
        namespace=ns,
        what="the engine rollout to finish",
        check=workload_settled,
    )
    pods = list_objects(
        env.kube,
        ["pods"],
        namespace=ns,
        selector=f"{INSTANCE_LABEL}={name},app.kubernetes.io/component=engine",
    )
    live_hashes = {
        p["metadata"].get("annotations", {}).get("srvthreds.io/config-hash")
        for p in pods
        if "deletionTimestamp" not in p["metadata"]
    }
    assert live_hashes == {config_hash(rolled)}, f"engine pods still carry {live_hashes}"


# --- 5. autoscaling ---


def test_with_autoscaling_an_hpa_owns_the_replicas_and_the_operator_leaves_them(
    env: OperatorEnv, ns: str
) -> None:
    cr = prepared(sample("minimal"), namespace=ns)
    cr["spec"].setdefault("engine", {})["autoscaling"] = {
        "enabled": True,
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetCPUUtilizationPercentage": 70,
    }
    cr = start(env, cr)
    name = cr["metadata"]["name"]
    hpa = get_object(
        env.kube, "horizontalpodautoscalers.autoscaling", f"{name}-engine", namespace=ns
    )
    assert hpa is not None, env.operator.report("no HPA for the engine")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{name}-engine"

    # Scale as the HPA controller would (the scale subresource), within its bounds.
    env.kube("scale", f"deployment/{name}-engine", "--replicas=5", "-n", ns)
    generation = patch_spec(
        env, name, namespace=ns, spec={"engine": {"env": [{"name": "ITEST_TOUCH", "value": "1"}]}}
    )
    wait_workload(
        env,
        f"{name}-engine",
        namespace=ns,
        what="the engine to get ITEST_TOUCH",
        check=lambda d: any(
            e.get("name") == "ITEST_TOUCH" for e in containers(pod_template(d))[0].get("env", [])
        ),
    )
    wait_observed(
        env.kube,
        name,
        namespace=ns,
        operator=env.operator,
        what=f"the operator to observe generation {generation}",
    )

    engine = workload(env, f"{name}-engine", namespace=ns)
    assert engine["spec"]["replicas"] == 5, env.operator.report("the operator fought the HPA")
    assert not _manages_replicas(engine), "the operator's field manager owns spec.replicas"


def _manages_replicas(deployment: Mapping[str, Any]) -> bool:
    for entry in deployment["metadata"].get("managedFields", []):
        if entry.get("manager") == FIELD_MANAGER and "f:replicas" in entry.get("fieldsV1", {}).get(
            "f:spec", {}
        ):
            return True
    return False


# --- 6. the scale subresource ---


def test_kubectl_scale_on_the_cluster_reaches_the_engine_deployment(
    env: OperatorEnv, ns: str
) -> None:
    cr = start(env, prepared(sample("minimal"), namespace=ns))
    name = cr["metadata"]["name"]

    env.kube("scale", f"stc/{name}", "--replicas=3", "-n", ns)

    wait_workload(
        env,
        f"{name}-engine",
        namespace=ns,
        what="the engine Deployment at 3 replicas",
        check=lambda d: d["spec"]["replicas"] == 3 and workload_settled(d),
    )
    ready = wait_ready(env.kube, name, namespace=ns, operator=env.operator)
    assert ready["spec"]["engine"]["replicas"] == 3
    scale = env.kube(
        "get",
        "--raw",
        f"/apis/srvthreds.io/v1alpha1/namespaces/{ns}/srvthredsclusters/{name}/scale",
    )
    body = json.loads(scale.stdout)
    assert body["spec"]["replicas"] == 3
    assert body["status"]["replicas"] == 3, body
    assert f"{INSTANCE_LABEL}={name}" in body["status"]["selector"], body


# --- 7. pause ---


def test_a_paused_cluster_is_left_alone_until_unpaused(env: OperatorEnv, ns: str) -> None:
    cr = start(env, prepared(sample("minimal"), namespace=ns))
    name = cr["metadata"]["name"]
    replicas = workload(env, f"{name}-engine", namespace=ns)["spec"]["replicas"]

    patch_spec(env, name, namespace=ns, spec={"paused": True})
    generation = patch_spec(env, name, namespace=ns, spec={"engine": {"replicas": replicas + 1}})
    paused = wait_cluster(
        env,
        name,
        namespace=ns,
        what=f"a Paused condition for generation {generation}",
        check=lambda c: condition_is(c, "Paused", "True"),
    )
    assert paused["status"]["phase"] == "Paused", status_summary(paused)
    assert workload(env, f"{name}-engine", namespace=ns)["spec"]["replicas"] == replicas, (
        env.operator.report("a paused cluster's change was applied")
    )

    patch_spec(env, name, namespace=ns, spec={"paused": False})
    wait_workload(
        env,
        f"{name}-engine",
        namespace=ns,
        what=f"{replicas + 1} replicas once unpaused",
        check=lambda d: d["spec"]["replicas"] == replicas + 1,
    )
    ready = wait_ready(env.kube, name, namespace=ns, operator=env.operator)
    paused_condition = condition(ready, "Paused")
    assert paused_condition is None or paused_condition["status"] == "False", paused_condition


def test_the_pause_annotation_also_pauses(env: OperatorEnv, ns: str) -> None:
    cr = start(env, prepared(sample("minimal"), namespace=ns))
    name = cr["metadata"]["name"]
    replicas = workload(env, f"{name}-engine", namespace=ns)["spec"]["replicas"]

    env.kube("annotate", CR_RESOURCE, name, "srvthreds.io/reconcile=paused", "-n", ns)
    generation = patch_spec(env, name, namespace=ns, spec={"engine": {"replicas": replicas + 1}})
    wait_cluster(
        env,
        name,
        namespace=ns,
        what=f"a Paused condition for generation {generation}",
        check=lambda c: condition_is(c, "Paused", "True"),
    )
    assert workload(env, f"{name}-engine", namespace=ns)["spec"]["replicas"] == replicas

    env.kube("annotate", CR_RESOURCE, name, "srvthreds.io/reconcile-", "-n", ns)
    wait_workload(
        env,
        f"{name}-engine",
        namespace=ns,
        what="the change once the annotation went",
        check=lambda d: d["spec"]["replicas"] == replicas + 1,
    )
    wait_ready(env.kube, name, namespace=ns, operator=env.operator)


# --- 8. hibernate ---


def test_hibernate_scales_the_apps_to_zero_and_back(env: OperatorEnv, ns: str) -> None:
    cr = start(env, prepared(sample("minimal"), namespace=ns))
    name = cr["metadata"]["name"]
    awake = {c: w["spec"]["replicas"] for c, w in app_workloads(env, name, namespace=ns).items()}

    generation = patch_spec(env, name, namespace=ns, spec={"hibernate": True})
    for component, deployed in app_workloads(env, name, namespace=ns).items():
        wait_workload(
            env,
            deployed["metadata"]["name"],
            namespace=ns,
            kind=deployed["kind"],
            what=f"{component} at zero replicas",
            check=lambda w: w["spec"].get("replicas") == 0 and workload_settled(w),
        )
    hibernated = wait_cluster(
        env,
        name,
        namespace=ns,
        what=f"phase Hibernated at generation {generation}",
        check=lambda c: (
            c.get("status", {}).get("phase") == "Hibernated"
            and c["status"].get("observedGeneration") == generation
        ),
    )
    assert hibernated["status"]["phase"] == "Hibernated"
    for broker in _managed_brokers(cr):
        kept = workload(env, f"{name}-{broker}", namespace=ns, kind="StatefulSet")
        assert kept["spec"]["replicas"] >= 1, f"managed {broker} was scaled down in hibernate"

    patch_spec(env, name, namespace=ns, spec={"hibernate": False})
    wait_ready(env.kube, name, namespace=ns, operator=env.operator)
    back = {c: w["spec"]["replicas"] for c, w in app_workloads(env, name, namespace=ns).items()}
    assert back == awake


def _managed_brokers(cr: Mapping[str, Any]) -> list[str]:
    brokers = cr["spec"].get("brokers", {})
    return [b for b in BROKERS if brokers.get(b, {}).get("mode", "Managed") == "Managed"]


# --- 9. deletion ---


def test_deleting_the_cluster_removes_every_child(env: OperatorEnv, ns: str) -> None:
    cr = start(env, prepared(sample("production"), namespace=ns))
    name = cr["metadata"]["name"]
    children = owned_children(env, cr)
    resources = sorted({resource_of(c) for c in children})

    env.kube("delete", CR_RESOURCE, name, "-n", ns, "--wait=true", "--timeout=60s")

    def remaining() -> list[str]:
        leftovers = list_objects(
            env.kube, [*resources, "pods"], namespace=ns, selector=f"{INSTANCE_LABEL}={name}"
        )
        return [
            f"{o['kind']}/{o['metadata']['name']}"
            for o in leftovers
            if o["kind"] != "PersistentVolumeClaim"
        ]

    # The garbage collector may need a discovery resync (30 s) before it knows the new CRD.
    wait_for(
        lambda: remaining() == [],
        timeout=GC_TIMEOUT,
        what=f"every child of {name} to be garbage-collected",
    )


# --- 12. backups ---


def test_a_job_from_the_backup_cronjob_has_its_command_env_and_secrets(
    env: OperatorEnv, ns: str
) -> None:
    cr = prepared(sample("production"), namespace=ns)
    assert cr["spec"].get("backup", {}).get("enabled"), "the production sample enables backups"
    cr = start(env, cr)
    name = cr["metadata"]["name"]
    s3 = cr["spec"]["backup"]["destination"]["s3"]

    for broker, tool in (("mongodb", "mongodump"), ("redis", "redis")):
        cronjob = get_object(env.kube, "cronjobs.batch", f"{name}-backup-{broker}", namespace=ns)
        assert cronjob is not None, env.operator.report(f"no backup CronJob for {broker}")
        job_name = f"itest-backup-{broker}"
        env.kube("create", "job", job_name, f"--from=cronjob/{name}-backup-{broker}", "-n", ns)
        job = get_object(env.kube, "jobs.batch", job_name, namespace=ns)
        assert job is not None
        template = pod_template(job)
        script = " ".join(
            " ".join([*c.get("command", []), *c.get("args", [])])
            for c in [*template["spec"].get("initContainers", []), *containers(template)]
        )
        assert tool in script, f"{broker} backup does not run {tool}: {script}"
        env_values = " ".join(
            str(e.get("value", "")) for c in containers(template) for e in c.get("env", [])
        )
        assert s3["bucket"] in env_values + script, f"bucket {s3['bucket']} not passed"
        used = secret_names_used(template)
        assert s3["credentialsSecretRef"]["name"] in used, f"S3 credentials not used: {used}"
        if cr["spec"]["brokers"].get(broker, {}).get("mode", "Managed") == "Managed":
            assert used & {f"{name}-{broker}-credentials", f"{name}-connections"}, used
        wait_for(
            functools.partial(job_succeeded, env, job_name, namespace=ns),
            timeout=CHANGE_TIMEOUT,
            what=f"Job {job_name} to complete",
        )


def job_succeeded(env: OperatorEnv, name: str, *, namespace: str) -> bool:
    job = get_object(env.kube, "jobs.batch", name, namespace=namespace) or {}
    return int(job.get("status", {}).get("succeeded", 0)) >= 1


# --- 14. brokers ---


def test_managed_brokers_get_statefulsets_services_volumes_and_generated_secrets(
    env: OperatorEnv, ns: str
) -> None:
    cr = prepared(sample("minimal"), namespace=ns)
    cr["spec"]["brokers"] = {b: {"mode": "Managed", "managed": {}} for b in BROKERS}
    cr = start(env, cr)
    name = cr["metadata"]["name"]

    passwords: dict[str, dict[str, str]] = {}
    for broker in BROKERS:
        stateful = workload(env, f"{name}-{broker}", namespace=ns, kind="StatefulSet")
        assert workload_settled(stateful), f"{broker}: {stateful.get('status')}"
        for service in (f"{name}-{broker}", f"{name}-{broker}-headless"):
            assert get_object(env.kube, "services", service, namespace=ns), f"no Service {service}"
        secret = get_object(env.kube, "secrets", f"{name}-{broker}-credentials", namespace=ns)
        assert secret is not None, f"no generated credentials for {broker}"
        passwords[broker] = decoded(secret)
        assert any(len(v) >= 16 for v in passwords[broker].values()), "weak or empty credentials"
        claims = [t["metadata"]["name"] for t in stateful["spec"].get("volumeClaimTemplates", [])]
        assert claims, f"{broker} has no volumeClaimTemplates"
        for claim in claims:
            pvc = get_object(
                env.kube, "persistentvolumeclaims", f"{claim}-{name}-{broker}-0", namespace=ns
            )
            assert pvc is not None, f"no PVC {claim}-{name}-{broker}-0"
            assert pvc["status"]["phase"] == "Bound", pvc["status"]

    # Credentials are generated once: another full reconcile keeps them.
    generation = patch_spec(env, name, namespace=ns, spec={"config": {"logLevel": "debug"}})
    wait_observed(
        env.kube,
        name,
        namespace=ns,
        operator=env.operator,
        what=f"the operator to observe generation {generation}",
    )
    for broker in BROKERS:
        secret = get_object(env.kube, "secrets", f"{name}-{broker}-credentials", namespace=ns)
        assert secret is not None
        assert decoded(secret) == passwords[broker], f"{broker} credentials were regenerated"


def test_external_brokers_get_nothing_and_the_apps_get_the_referenced_secret(
    env: OperatorEnv, ns: str
) -> None:
    cr = start(env, prepared(sample("external"), namespace=ns))
    name = cr["metadata"]["name"]
    external = {
        broker: spec["external"]["secretRef"]["name"]
        for broker, spec in cr["spec"]["brokers"].items()
        if spec.get("mode") == "External"
    }
    assert external, "the external sample has no External broker"

    for broker in external:
        for resource, child in (
            ("statefulsets.apps", f"{name}-{broker}"),
            ("services", f"{name}-{broker}"),
            ("services", f"{name}-{broker}-headless"),
            ("secrets", f"{name}-{broker}-credentials"),
        ):
            assert get_object(env.kube, resource, child, namespace=ns) is None, (
                f"{resource} {child} exists for an External {broker}"
            )
    connections = get_object(env.kube, "secrets", f"{name}-connections", namespace=ns)
    connection_values = set(decoded(connections).values()) if connections else set()
    for component, deployed in app_workloads(env, name, namespace=ns).items():
        used = secret_names_used(pod_template(deployed))
        for broker, secret in external.items():
            url = _fake_url(env, secret, namespace=ns)
            assert secret in used or url in connection_values, (
                f"{component} gets neither Secret {secret} nor its URL for {broker} (uses {used})"
            )


def _fake_url(env: OperatorEnv, secret: str, *, namespace: str) -> str:
    found = get_object(env.kube, "secrets", secret, namespace=namespace)
    assert found is not None
    return decoded(found).get("url", "")
