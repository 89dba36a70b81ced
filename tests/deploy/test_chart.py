"""The Helm chart, rendered by the real helm: what each service gets, and that values flow through."""

from __future__ import annotations

import pytest

from loyalty_runtime.server import LIVENESS
from tests.deploy.chart import (
    CHART,
    NAMESPACE,
    PORTS,
    RELEASE,
    SERVICES,
    TEST_VALUES,
    Rendered,
    container,
    env_of,
    hook_of,
)

SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
STANDARD_LABELS = SELECTOR_KEYS | {
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


def full(name: str) -> str:
    return f"{RELEASE}-{name}"


def selector(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "loyalty",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": name,
    }


def workloads(m: Rendered):
    yield from m.of_kind("Deployment")
    yield from m.of_kind("Job")


def test_helm_lint_passes(run_helm):
    result = run_helm("lint", "--strict", str(CHART), "-f", str(TEST_VALUES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_gets_its_objects(manifests: Rendered, name: str):
    deployment = manifests.get("Deployment", full(name))
    service = manifests.get("Service", full(name))
    headless = manifests.get("Service", f"{full(name)}-headless")
    hpa = manifests.get("HorizontalPodAutoscaler", full(name))
    pdb = manifests.get("PodDisruptionBudget", full(name))
    account = manifests.get("ServiceAccount", full(name))
    job = manifests.get("Job", f"{full(name)}-migrate")
    manifests.get("NetworkPolicy", full(name))

    assert service["spec"]["type"] == "ClusterIP" and "clusterIP" not in service["spec"]
    assert headless["spec"]["clusterIP"] == "None"
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": full(name),
    }
    assert pdb["apiVersion"] == "policy/v1"
    assert account["automountServiceAccountToken"] is False
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == full(name)
    assert container(job)["args"] == ["migrate"]
    assert container(deployment)["args"] == ["serve"]
    assert hook_of(job) == "pre-install,pre-upgrade"
    assert container(job)["image"] == container(deployment)["image"] == f"loyalty-{name}:0.1.0"


def test_nothing_else_is_rendered_per_service(manifests: Rendered):
    """One object of each kind per service, plus the few release-wide ones."""
    counts = {kind: len(manifests.of_kind(kind)) for kind in {d["kind"] for d in manifests.docs}}
    n = len(SERVICES)
    assert counts == {
        "Deployment": n,
        "Service": 2 * n,
        "HorizontalPodAutoscaler": n,
        "PodDisruptionBudget": n,
        "ServiceAccount": n + 1,  # + the migration hook's
        "Job": n,
        "NetworkPolicy": n + 2,  # + default deny, + DNS/external egress
        "Secret": 2,  # the release's, and the migration hook's
    }


@pytest.mark.parametrize("name", SERVICES)
def test_ports_and_grpc_probes(manifests: Rendered, name: str):
    c = container(manifests.get("Deployment", full(name)))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == PORTS[name]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(c[probe]) - {
            "periodSeconds",
            "timeoutSeconds",
            "failureThreshold",
            "initialDelaySeconds",
        } == {"grpc"}, f"{probe} must be a native grpc probe"
        port = c[probe]["grpc"]["port"]
        assert isinstance(port, int) and port == PORTS[name]["grpc"]
    # liveness must survive a database outage and a drain; startup and readiness must not
    assert c["livenessProbe"]["grpc"]["service"] == LIVENESS
    assert c["readinessProbe"]["grpc"]["service"] == ""
    assert c["startupProbe"]["grpc"]["service"] == ""

    service_ports = {p["name"]: p["port"] for p in manifests.get("Service", full(name))["spec"]["ports"]}
    assert service_ports == PORTS[name]
    headless_ports = manifests.get("Service", f"{full(name)}-headless")["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in headless_ports] == [("grpc", PORTS[name]["grpc"])]


def test_the_services_with_an_http_port_in_the_catalogue_expose_it(manifests: Rendered):
    with_http = {
        d["metadata"]["name"]
        for d in manifests.of_kind("Deployment")
        if any(p["name"] == "http" for p in container(d)["ports"])
    }
    assert with_http == {full("gateway"), full("notification")}
    assert env_of(manifests.get("Deployment", full("gateway")))["GATEWAY_HTTP_PORT"] == "8080"
    env = env_of(manifests.get("Deployment", full("notification")))
    assert env["NOTIFICATION_HTTP_PORT"] == "8057"
    # Not published: no public URL (the links stay out of messages) and no Ingress.
    assert "NOTIFICATION_HTTP_PUBLIC_URL" not in env
    assert manifests.of_kind("Ingress") == []


def links_ingress(render, *sets: str) -> Rendered:
    prefix = "services.notification.http.ingress"
    return render(f"{prefix}.enabled=true", f"{prefix}.host=links.example.com", *sets)


def test_an_ingress_publishes_the_notification_links_at_their_public_url(render):
    m = links_ingress(
        render,
        "services.notification.http.ingress.path=/notification",
        "services.notification.http.ingress.className=nginx",
        "services.notification.http.ingress.tlsSecretName=links-tls",
    )
    [ingress] = m.of_kind("Ingress")
    assert ingress["metadata"]["name"] == full("notification")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "links-tls", "hosts": ["links.example.com"]}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "links.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/notification",
            "pathType": "Prefix",
            "backend": {"service": {"name": full("notification"), "port": {"name": "http"}}},
        }
    ]
    env = env_of(m.get("Deployment", full("notification")))
    assert env["NOTIFICATION_HTTP_PUBLIC_URL"] == "https://links.example.com/notification"
    # Without TLS the links are http://; an explicit publicUrl wins over the Ingress's.
    plain = env_of(links_ingress(render).get("Deployment", full("notification")))
    assert plain["NOTIFICATION_HTTP_PUBLIC_URL"] == "http://links.example.com"
    given = links_ingress(render, "services.notification.http.publicUrl=https://l.example.org/x/")
    assert env_of(given.get("Deployment", full("notification")))["NOTIFICATION_HTTP_PUBLIC_URL"] == (
        "https://l.example.org/x"
    )


def test_published_links_admit_the_ingress_controller_on_the_http_port_only(manifests: Rendered, render):
    http, grpc = PORTS["notification"]["http"], PORTS["notification"]["grpc"]
    assert ingress_peers(manifests.get("NetworkPolicy", full("notification")), http) == []
    controller = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    for m in (links_ingress(render), render("services.notification.http.publicUrl=https://l.example.org")):
        policy = m.get("NetworkPolicy", full("notification"))
        assert ingress_peers(policy, http) == controller
        assert ingress_peers(policy, grpc) == [
            {"podSelector": {"matchLabels": selector(caller)}} for caller in ("gateway", "promotion")
        ]
    pinned = links_ingress(render, "networkPolicy.ingressController.podSelector.app=ingress-nginx")
    assert ingress_peers(pinned.get("NetworkPolicy", full("notification")), http) == [
        {**controller[0], "podSelector": {"matchLabels": {"app": "ingress-nginx"}}}
    ]


def test_an_ingress_needs_an_http_port_and_a_sound_public_url(helm_template):
    result = helm_template("services.profile.http.ingress.enabled=true")
    assert result.returncode != 0 and "services.profile.http.ingress needs services.profile.ports.http" in (
        result.stderr
    )
    assert helm_template("services.notification.http.publicUrl=links.example.com").returncode != 0
    assert helm_template("services.notification.http.ingress.path=notification").returncode != 0


def test_keys_come_from_existing_secrets(render, helm_template):
    m = render(
        "services.notification.secretEnv.NOTIFICATION_UNSUBSCRIBE_SECRET.secret=keys",
        "services.notification.secretEnv.NOTIFICATION_UNSUBSCRIBE_SECRET.key=unsubscribe",
    )
    env = env_of(m.get("Deployment", full("notification")))
    assert env["NOTIFICATION_UNSUBSCRIBE_SECRET"] == {"secretKeyRef": {"name": "keys", "key": "unsubscribe"}}
    job = env_of(m.get("Job", f"{full('notification')}-migrate"))
    assert "NOTIFICATION_UNSUBSCRIBE_SECRET" not in job, "the migration needs no keys"
    assert helm_template("services.notification.secretEnv.X.secret=keys").returncode != 0


def test_security_context_is_restricted(manifests: Rendered):
    checked = 0
    for w in workloads(manifests):
        pod = w["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(w)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc.get("privileged", False) is False
        # the read-only root still has a writable /tmp
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in container(w)["volumeMounts"]}
        assert mounts.get("/tmp") in tmp_volumes
        checked += 1
    assert checked == 2 * len(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_selector_labels_are_stable_and_disjoint(manifests: Rendered, render, name: str):
    deployment = manifests.get("Deployment", full(name))
    assert deployment["spec"]["selector"]["matchLabels"] == selector(name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert set(pod_labels) >= STANDARD_LABELS
    assert pod_labels.items() >= selector(name).items()
    for kind in ("Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount"):
        assert set(manifests.get(kind, full(name))["metadata"]["labels"]) >= STANDARD_LABELS, kind
    assert manifests.get("Service", full(name))["spec"]["selector"] == selector(name)
    assert manifests.get("Service", f"{full(name)}-headless")["spec"]["selector"] == selector(name)
    assert manifests.get("PodDisruptionBudget", full(name))["spec"]["selector"]["matchLabels"] == selector(
        name
    )

    # A new image tag must not change a selector (Deployment selectors are immutable).
    upgraded = render("image.tag=9.9.9")
    assert upgraded.get("Deployment", full(name))["spec"]["selector"] == deployment["spec"]["selector"]
    assert container(upgraded.get("Deployment", full(name)))["image"] == f"loyalty-{name}:9.9.9"


def test_migration_pods_are_not_behind_any_service(manifests: Rendered):
    """A running migration Job must never receive traffic or count for a disruption budget."""
    selectors = [s["spec"]["selector"] for s in manifests.of_kind("Service")]
    selectors += [p["spec"]["selector"]["matchLabels"] for p in manifests.of_kind("PodDisruptionBudget")]
    for job in manifests.of_kind("Job"):
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert not any(sel.items() <= labels.items() for sel in selectors), job["metadata"]["name"]


def test_schema_rejects_unknown_keys(helm_template):
    for typo in (
        "services.profile.replcas=3",
        "servces.profile.replicas=3",
        "services.ledger.autoscaling.maxReplica=5",
        "networkPolicy.dns.namspaceSelector.a=b",
        "services.profle.replicas=3",
    ):
        result = helm_template(typo)
        assert result.returncode != 0, f"{typo} was accepted"
        assert "additional properties" in result.stderr.lower(), result.stderr


def test_schema_rejects_wrong_types(helm_template):
    for bad in (
        "services.profile.replicas=many",
        "services.profile.ports.grpc=70000",
        "defaults.logLevel=LOUD",
    ):
        result = helm_template(bad)
        assert result.returncode != 0, f"{bad} was accepted"


def test_a_valid_override_still_renders(render):
    """The schema must not reject what values.yaml documents."""
    m = render("services.profile.replicas=3", "services.profile.autoscaling.enabled=false")
    assert m.get("Deployment", full("profile"))["spec"]["replicas"] == 3


def test_disabling_a_service_removes_its_objects(manifests: Rendered, render):
    m = render("services.fraud.enabled=false")
    fraud = [
        d
        for d in m.docs
        if "fraud" in d["metadata"]["name"]
        or d["metadata"].get("labels", {}).get("app.kubernetes.io/component", "").startswith("fraud")
    ]
    assert fraud == []
    assert len(m.docs) == len(manifests.docs) - 8  # SA, 2 Services, Deployment, HPA, PDB, NetPol, Job
    gateway_env = env_of(m.get("Deployment", full("gateway")))
    assert "GATEWAY_FRAUD_TARGET" not in gateway_env
    assert "GATEWAY_LEDGER_TARGET" in gateway_env


def test_replicas_and_autoscaling_values_flow_through(manifests: Rendered, render):
    # autoscaled by default: the HPA owns the replica count
    assert "replicas" not in manifests.get("Deployment", full("ledger"))["spec"]
    m = render(
        "services.ledger.autoscaling.enabled=false",
        "services.ledger.replicas=3",
        "services.promotion.autoscaling.minReplicas=4",
        "services.promotion.autoscaling.maxReplicas=12",
        "services.promotion.autoscaling.targetCPUUtilizationPercentage=55",
        "services.promotion.autoscaling.targetMemoryUtilizationPercentage=80",
    )
    assert m.get("Deployment", full("ledger"))["spec"]["replicas"] == 3
    assert m.find("HorizontalPodAutoscaler", full("ledger")) is None
    hpa = m.get("HorizontalPodAutoscaler", full("promotion"))["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 12)
    targets = {x["resource"]["name"]: x["resource"]["target"]["averageUtilization"] for x in hpa["metrics"]}
    assert targets == {"cpu": 55, "memory": 80}
    # defaults apply to every service, a service's own value wins
    m = render("defaults.autoscaling.maxReplicas=7", "services.gateway.autoscaling.maxReplicas=20")
    assert m.get("HorizontalPodAutoscaler", full("profile"))["spec"]["maxReplicas"] == 7
    assert m.get("HorizontalPodAutoscaler", full("gateway"))["spec"]["maxReplicas"] == 20


def test_large_numbers_render_as_integers(render):
    """Helm holds numbers as floats: 1000000 must not come out as 1e+06."""
    m = render(
        "defaults.migration.activeDeadlineSeconds=1000000",
        "services.ledger.autoscaling.enabled=false",
        "services.ledger.replicas=1000000",
        "services.fraud.autoscaling.maxReplicas=1000000",
    )
    assert m.get("Job", full("profile-migrate"))["spec"]["activeDeadlineSeconds"] == 1000000
    assert m.get("Deployment", full("ledger"))["spec"]["replicas"] == 1000000
    assert m.get("HorizontalPodAutoscaler", full("fraud"))["spec"]["maxReplicas"] == 1000000


def test_disruption_budget_is_on_by_default_and_configurable(manifests: Rendered, render):
    assert manifests.get("PodDisruptionBudget", full("profile"))["spec"]["maxUnavailable"] == 1
    m = render(
        "services.profile.podDisruptionBudget.minAvailable=50%",
        "services.fraud.podDisruptionBudget.enabled=false",
    )
    spec = m.get("PodDisruptionBudget", full("profile"))["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec
    assert m.find("PodDisruptionBudget", full("fraud")) is None


def test_resources_flow_through(manifests: Rendered, render):
    assert (
        container(manifests.get("Deployment", full("promotion")))["resources"]["limits"]["memory"] == "768Mi"
    )
    m = render("services.ledger.resources.limits.memory=1Gi", "defaults.resources.requests.cpu=300m")
    resources = container(m.get("Deployment", full("ledger")))["resources"]
    assert resources["limits"]["memory"] == "1Gi"
    assert resources["requests"]["cpu"] == "300m"
    assert container(m.get("Job", full("ledger-migrate")))["resources"] == resources


def test_grpc_settings_reach_the_environment(manifests: Rendered, render):
    env = env_of(manifests.get("Deployment", full("profile")))
    assert env["PROFILE_GRPC_PORT"] == "50052"
    assert env["PROFILE_METRICS_PORT"] == "9452"
    assert env["PROFILE_MAX_CONNECTION_AGE_SECONDS"] == "30"
    assert env["PROFILE_GRACE_PERIOD_SECONDS"] == "20"
    assert env["OTEL_SERVICE_NAME"] == "profile"
    assert "service.namespace=loyalty" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    m = render(
        "services.profile.maxConnectionAgeSeconds=120",
        "services.profile.graceSeconds=40",
        "otel.endpoint=http://collector:4317",
        "services.profile.env.PROFILE_CACHE_TTL_SECONDS=5",
    )
    deployment = m.get("Deployment", full("profile"))
    env = env_of(deployment)
    assert env["PROFILE_MAX_CONNECTION_AGE_SECONDS"] == "120"
    assert env["PROFILE_GRACE_PERIOD_SECONDS"] == "40"
    assert env["PROFILE_CACHE_TTL_SECONDS"] == "5"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"
    # the pod outlives the drain
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 40


def test_gateway_calls_every_service_through_its_headless_service(manifests: Rendered):
    env = env_of(manifests.get("Deployment", full("gateway")))
    for name in SERVICES:
        if name == "gateway":
            continue
        headless = f"{full(name)}-headless"
        target = f"dns:///{headless}.{NAMESPACE}.svc.cluster.local:{PORTS[name]['grpc']}"
        assert env[f"GATEWAY_{name.upper()}_TARGET"] == target
        assert manifests.get("Service", headless)["spec"]["clusterIP"] == "None"
    # the others call nobody by default
    assert not [k for k in env_of(manifests.get("Deployment", full("ledger"))) if k.endswith("_TARGET")]


def secret_ref(env: dict, name: str) -> tuple[str, str]:
    ref = env[name]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_secrets_from_values(manifests: Rendered):
    secret = manifests.get("Secret", RELEASE)
    assert set(secret["data"]) == {"database-url", "redis-url", "internal-token"}
    for name in SERVICES:
        env = env_of(manifests.get("Deployment", full(name)))
        prefix = name.upper()
        assert secret_ref(env, f"{prefix}_DATABASE_URL") == (RELEASE, "database-url")
        assert secret_ref(env, f"{prefix}_REDIS_URL") == (RELEASE, "redis-url")
        assert secret_ref(env, f"{prefix}_INTERNAL_TOKEN") == (RELEASE, "internal-token")
        # the hook Job runs before the release's Secret exists: it reads the hook's own Secret
        job_env = env_of(manifests.get("Job", full(f"{name}-migrate")))
        assert secret_ref(job_env, f"{prefix}_DATABASE_URL") == (full("migrate"), "database-url")
    hook_secret = manifests.get("Secret", full("migrate"))
    assert hook_of(hook_secret) == "pre-install,pre-upgrade"
    assert hook_secret["data"]["database-url"] == secret["data"]["database-url"]
    hook_account = manifests.get("ServiceAccount", full("migrate"))
    weights = {int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in (hook_secret, hook_account)}
    job_weight = int(
        manifests.get("Job", full("profile-migrate"))["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert max(weights) < job_weight, "the hook's Secret and ServiceAccount must exist before the Jobs"


def test_existing_secrets_are_referenced_not_copied(render):
    m = render(
        values={
            "database": {"url": "", "existingSecret": "pg", "existingSecretKey": "uri"},
            "redis": {"url": "", "existingSecret": "cache"},
            "internalToken": {"existingSecret": "mesh"},
            "services": {"ledger": {"database": {"existingSecret": "ledger-pg", "existingSecretKey": "url"}}},
        }
    )
    assert m.find("Secret", RELEASE) is None
    assert m.find("Secret", full("migrate")) is None
    env = env_of(m.get("Deployment", full("profile")))
    assert secret_ref(env, "PROFILE_DATABASE_URL") == ("pg", "uri")
    assert secret_ref(env, "PROFILE_REDIS_URL") == ("cache", "redis-url")
    assert secret_ref(env, "PROFILE_INTERNAL_TOKEN") == ("mesh", "internal-token")
    assert secret_ref(env_of(m.get("Deployment", full("ledger"))), "LEDGER_DATABASE_URL") == (
        "ledger-pg",
        "url",
    )
    assert secret_ref(env_of(m.get("Job", full("ledger-migrate"))), "LEDGER_DATABASE_URL") == (
        "ledger-pg",
        "url",
    )


def test_migration_jobs_log_in_as_the_owner_and_grant_the_service_role(manifests: Rendered, render):
    # by default one login does both, and nothing is granted
    job_env = env_of(manifests.get("Job", full("ledger-migrate")))
    assert secret_ref(job_env, "LEDGER_DATABASE_URL") == (full("migrate"), "database-url")
    assert "LEDGER_DATABASE_SERVICE_ROLE" not in job_env
    m = render(
        "database.migrationUrl=postgresql+asyncpg://owner:secret@db:5432/loyalty",
        "database.serviceRole=loyalty_app",
    )
    hook_secret = m.get("Secret", full("migrate"))["data"]
    assert set(hook_secret) == {"migration-database-url"}
    assert "migration-database-url" not in m.get("Secret", RELEASE)["data"], "services never see it"
    for name in SERVICES:
        prefix = name.upper()
        job_env = env_of(m.get("Job", full(f"{name}-migrate")))
        assert secret_ref(job_env, f"{prefix}_DATABASE_URL") == (full("migrate"), "migration-database-url")
        assert job_env[f"{prefix}_DATABASE_SERVICE_ROLE"] == "loyalty_app"
        env = env_of(m.get("Deployment", full(name)))
        assert secret_ref(env, f"{prefix}_DATABASE_URL") == (RELEASE, "database-url")
        assert f"{prefix}_DATABASE_SERVICE_ROLE" not in env


def test_migration_url_from_an_existing_secret_and_per_service(render):
    m = render(
        values={
            "database": {"migrationExistingSecret": "pg-owner", "serviceRole": "loyalty_app"},
            "services": {
                "ledger": {"database": {"url": "postgresql+asyncpg://ledger@ledger-db/ledger"}},
                "fraud": {"database": {"migrationUrl": "postgresql+asyncpg://fraud-owner@db/loyalty"}},
            },
        }
    )
    profile = env_of(m.get("Job", full("profile-migrate")))
    assert secret_ref(profile, "PROFILE_DATABASE_URL") == ("pg-owner", "migration-database-url")
    assert profile["PROFILE_DATABASE_SERVICE_ROLE"] == "loyalty_app"
    # a service with a database of its own never gets the global owner's login or role
    ledger = env_of(m.get("Job", full("ledger-migrate")))
    assert secret_ref(ledger, "LEDGER_DATABASE_URL") == (full("migrate"), "ledger-database-url")
    assert "LEDGER_DATABASE_SERVICE_ROLE" not in ledger
    fraud = env_of(m.get("Job", full("fraud-migrate")))
    assert secret_ref(fraud, "FRAUD_DATABASE_URL") == (full("migrate"), "fraud-migration-database-url")
    assert set(m.get("Secret", full("migrate"))["data"]) == {
        "ledger-database-url",
        "fraud-migration-database-url",
    }


def test_service_role_must_be_a_role_name(helm_template):
    result = helm_template("database.serviceRole=app; DROP TABLE x")
    assert result.returncode != 0
    assert "serviceRole" in result.stderr


def test_missing_database_fails_with_a_clear_message(helm_template):
    result = helm_template(base_values=False)
    assert result.returncode != 0
    assert "database.url or database.existingSecret" in result.stderr
    # a service without tables needs no database and gets no migration Job
    result = helm_template(
        "redis.url=redis://r:6379/0",
        *(f"services.{name}.database.enabled=false" for name in SERVICES),
        base_values=False,
    )
    assert result.returncode == 0, result.stderr
    assert "kind: Job" not in result.stdout and "_DATABASE_URL" not in result.stdout


def test_default_deny_and_dns(manifests: Rendered):
    release_pods = {"app.kubernetes.io/name": "loyalty", "app.kubernetes.io/instance": RELEASE}
    deny = manifests.get("NetworkPolicy", full("default-deny"))["spec"]
    assert deny["podSelector"]["matchLabels"] == release_pods
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")

    base = manifests.get("NetworkPolicy", full("allow-dns-and-external"))["spec"]
    assert base["podSelector"]["matchLabels"] == release_pods
    dns_rules = [r for r in base["egress"] if any(p["port"] == 53 for p in r["ports"])]
    assert len(dns_rules) == 1
    assert {(p["port"], p["protocol"]) for p in dns_rules[0]["ports"]} == {(53, "UDP"), (53, "TCP")}
    # every pod of the release, migration Jobs included, is covered by the release-wide policies
    for w in workloads(manifests):
        assert w["spec"]["template"]["metadata"]["labels"].items() >= release_pods.items()


def test_dns_can_be_pinned_to_kube_dns(render):
    m = render(
        "networkPolicy.dns.namespaceSelector.kubernetes\\.io/metadata\\.name=kube-system",
        "networkPolicy.dns.podSelector.k8s-app=kube-dns",
    )
    base = m.get("NetworkPolicy", full("allow-dns-and-external"))["spec"]
    dns = next(r for r in base["egress"] if any(p["port"] == 53 for p in r["ports"]))
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]


def ingress_peers(policy: dict, port: int) -> list | None:
    """The `from` of the rules opening `port` (None: from anywhere); [] if nothing opens it."""
    peers: list = []
    for rule in policy["spec"].get("ingress") or []:
        if any(p["port"] == port for p in rule["ports"]):
            if "from" not in rule:
                return None
            peers += rule["from"]
    return peers


def test_only_listed_callers_reach_a_service(manifests: Rendered, render):
    # notification reads consents and locales from profile, segmentation its attribute copy;
    # promotion's triggers read segments and metrics and send notifications
    callers = {
        "profile": ["gateway", "notification", "segmentation"],
        "segmentation": ["gateway", "promotion"],
        "notification": ["gateway", "promotion"],
    }
    for name in SERVICES:
        if name == "gateway":
            continue
        policy = manifests.get("NetworkPolicy", full(name))
        assert ingress_peers(policy, PORTS[name]["grpc"]) == [
            {"podSelector": {"matchLabels": selector(caller)}} for caller in callers.get(name, ["gateway"])
        ]
    # the gateway is the public entry point: gRPC and HTTP from anywhere
    gateway = manifests.get("NetworkPolicy", full("gateway"))
    assert ingress_peers(gateway, 50051) is None
    assert ingress_peers(gateway, 8080) is None
    egress_to = [
        r["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for r in gateway["spec"]["egress"]
    ]
    assert sorted(egress_to) == sorted(n for n in SERVICES if n != "gateway")

    # promotion may call the ledger once listed among the ledger's callers
    m = render("services.ledger.callers={gateway,promotion}")
    ledger = m.get("NetworkPolicy", full("ledger"))
    peers = ingress_peers(ledger, PORTS["ledger"]["grpc"])
    assert {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers} == {
        "gateway",
        "promotion",
    }
    promotion = m.get("NetworkPolicy", full("promotion"))["spec"]["egress"]
    assert sorted(r["ports"][0]["port"] for r in promotion) == sorted(
        PORTS[name]["grpc"] for name in ("ledger", "segmentation", "notification")
    )
    env = env_of(m.get("Deployment", full("promotion")))
    assert env["PROMOTION_LEDGER_TARGET"].startswith(f"dns:///{full('ledger')}-headless.")
    # ... and not before
    assert ingress_peers(manifests.get("NetworkPolicy", full("ledger")), PORTS["ledger"]["grpc"]) == [
        {"podSelector": {"matchLabels": selector("gateway")}}
    ]


def test_metrics_only_from_monitoring(manifests: Rendered):
    for name in SERVICES:
        peers = ingress_peers(manifests.get("NetworkPolicy", full(name)), PORTS[name]["metrics"])
        assert peers == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]


def test_network_policies_can_be_turned_off(render):
    assert render("networkPolicy.enabled=false").of_kind("NetworkPolicy") == []


def test_release_name_prefixes_everything(render):
    m = render(release="prod")
    assert m.find("Deployment", "prod-loyalty-profile") is not None
    env = env_of(m.get("Deployment", "prod-loyalty-gateway"))
    assert (
        env["GATEWAY_PROFILE_TARGET"]
        == f"dns:///prod-loyalty-profile-headless.{NAMESPACE}.svc.cluster.local:50052"
    )


def test_long_names_stay_valid_and_distinct(render):
    m = render("fullnameOverride=" + "x" * 70)
    for kind in {d["kind"] for d in m.docs}:
        names = [d["metadata"]["name"] for d in m.of_kind(kind)]
        assert all(len(n) <= 63 for n in names), names
        assert len(set(names)) == len(names), f"{kind} names collide: {names}"
    assert m.find("Service", "x" * 41 + "-segmentation-headless") is not None


@pytest.mark.parametrize("kubernetes_version", ["1.27.0", "latest"])
@pytest.mark.parametrize("published", [False, True], ids=["defaults", "links-ingress"])
def test_manifests_are_valid_kubernetes_objects(
    manifests: Rendered, render, kubernetes_version: str, published: bool
):
    """Every object against the Kubernetes OpenAPI schema, strictly (unknown fields fail); also
    with the optional pieces on (an Ingress with TLS, keys from a Secret)."""
    if published:
        manifests = links_ingress(
            render,
            "services.notification.http.ingress.tlsSecretName=links-tls",
            "services.notification.http.ingress.annotations.a=b",
            "services.notification.secretEnv.NOTIFICATION_TRACKING_SECRET.secret=keys",
            "services.notification.secretEnv.NOTIFICATION_TRACKING_SECRET.key=tracking",
        )
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is missing: it belongs to the dev dependency group", pytrace=False)
    version = kubernetes_validate.latest_version() if kubernetes_version == "latest" else kubernetes_version
    errors = []
    for doc in manifests.docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)
