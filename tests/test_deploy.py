"""The Kustomize manifests in deploy/kustomize, rendered and applied with the real kubectl to the local API server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kube import FakeKube

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "deploy" / "kustomize" / "overlays" / "example"
SERVICE_MONITOR_CRD = ROOT / "tests" / "data" / "kube" / "servicemonitor-crd.yaml"
NAMESPACE = "spillover-example"
CONFIG_PATH = "/etc/spillover/spillover.yaml"
# KUBECTL picks another binary, e.g. Debian's kubernetes-client (kubectl 1.20, kustomize v2) unpacked elsewhere.
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl")

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed; `make services` installs "
                                                        "Debian's kubernetes-client")


def kubectl(*args: str, kubeconfig: Path | None = None, cache: Path | None = None) -> str:
    cmd = [KUBECTL, *args]
    if kubeconfig is not None:
        # A discovery cache per test: another server on a reused port must not answer from a stale one.
        cmd += ["--kubeconfig", str(kubeconfig), "--cache-dir", str(cache or kubeconfig.parent / "kube-cache")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig or "/nonexistent")})
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}{done.stdout}"
    return done.stdout


def render(directory: Path) -> dict[tuple[str, str], dict]:
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(directory))) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def one(objects: dict, kind: str, prefix: str) -> dict:
    """The object of `kind` whose name is `prefix` or `prefix` plus a generator's hash suffix."""
    found = [o for (k, name), o in objects.items() if k == kind and (name == prefix or name.startswith(prefix + "-"))]
    assert len(found) == 1, f"expected one {kind} {prefix}*, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        present, value = expr["key"] in labels, labels.get(expr["key"])
        if not {"In": present and value in expr.get("values", []),
                "NotIn": not present or value not in expr.get("values", []),
                "Exists": present, "DoesNotExist": not present}[expr["operator"]]:
            return False
    return True


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict]:
    return render(OVERLAY)


# ---------------------------------------------------------------------------------------------------- rendering

def test_both_deployments_mount_the_generated_config_and_read_the_store_secret(rendered):
    config_map = one(rendered, "ConfigMap", "spillover-config")
    store_secret = one(rendered, "Secret", "spillover-store")
    assert config_map["metadata"]["name"] != "spillover-config", "the ConfigMap name carries a content hash"
    assert "PGPASSWORD" in store_secret["data"]
    for name, process in (("spillover-api", "serve"), ("spillover-loop", "run")):
        deployment = rendered[("Deployment", name)]
        assert deployment["metadata"]["namespace"] == NAMESPACE and deployment["spec"]["replicas"] == 2
        spec = pod_spec(deployment)
        volumes = {v["name"]: v for v in spec["volumes"]}
        container = spec["containers"][0]
        assert container["image"] == "registry.example.com/ml-platform/spillover:0.1.0"
        assert container["args"][:3] == [process, "-c", CONFIG_PATH]
        mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounted["/etc/spillover"]]["configMap"]["name"] == config_map["metadata"]["name"]
        secrets = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
        assert store_secret["metadata"]["name"] in secrets
        # every Secret a pod names is one the overlay renders, or one it may do without
        for ref in container.get("envFrom", []):
            if "secretRef" in ref and not ref["secretRef"].get("optional"):
                assert ("Secret", ref["secretRef"]["name"]) in rendered
        for v in volumes.values():
            if "secret" in v and not v["secret"].get("optional"):
                assert ("Secret", v["secret"]["secretName"]) in rendered


def test_the_loop_gets_the_kubeconfigs_and_cloud_credentials_the_api_does_not(rendered):
    api, loop = (pod_spec(rendered[("Deployment", n)]) for n in ("spillover-api", "spillover-loop"))
    kubeconfigs = one(rendered, "Secret", "spillover-kubeconfigs")
    loop_volumes = {v["name"]: v for v in loop["volumes"]}
    mounted = {m["mountPath"]: m["name"] for m in loop["containers"][0]["volumeMounts"]}
    assert loop_volumes[mounted["/etc/spillover-secrets/kubeconfigs"]]["secret"]["secretName"] == \
        kubeconfigs["metadata"]["name"]
    config = yaml.safe_load(one(rendered, "ConfigMap", "spillover-config")["data"]["spillover.yaml"])
    for cluster in config["clusters"]:
        path = (cluster.get("kubernetes") or {}).get("kubeconfig")
        if path:  # each kubeconfig the config names is a key of the mounted Secret
            assert path.startswith("/etc/spillover-secrets/kubeconfigs/")
            assert path.rsplit("/", 1)[1] in kubeconfigs["data"]
    cloud = one(rendered, "Secret", "spillover-cloud")["metadata"]["name"]
    assert cloud in [e["secretRef"]["name"] for e in loop["containers"][0]["envFrom"]]
    assert cloud not in [e["secretRef"]["name"] for e in api["containers"][0]["envFrom"]]
    assert not any("secret" in v for v in api["volumes"])
    assert api["automountServiceAccountToken"] is False


def test_the_api_is_probed_on_healthz_and_readyz_by_its_named_port(rendered):
    container = pod_spec(rendered[("Deployment", "spillover-api")])["containers"][0]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["args"][3:] == ["--host", "0.0.0.0", "--port", "8080"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    loop = pod_spec(rendered[("Deployment", "spillover-loop")])["containers"][0]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in loop["ports"]
    # reachable from Prometheus and the kubelet, not only from inside the pod
    assert loop["args"][3:] == ["--metrics-port", "9090", "--metrics-host", "0.0.0.0"]


def test_pods_run_as_non_root_on_a_read_only_root_filesystem_with_resources(rendered):
    for name in ("spillover-api", "spillover-loop"):
        spec = pod_spec(rendered[("Deployment", name)])
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert spec["serviceAccountName"] == "spillover"
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
            # a writable /tmp, since the root filesystem is not
            tmp = next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[tmp]


def test_services_and_the_service_monitor_meet_on_labels_and_port_names(rendered):
    monitor = rendered[("ServiceMonitor", "spillover")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["namespace"] == NAMESPACE
    scraped = {e["port"] for e in monitor["spec"]["endpoints"]}
    for service_name, deployment_name, port in (("spillover-api", "spillover-api", "http"),
                                                ("spillover-loop-metrics", "spillover-loop", "metrics")):
        service = rendered[("Service", service_name)]
        pods = rendered[("Deployment", deployment_name)]["spec"]["template"]["metadata"]["labels"]
        assert selects({"matchLabels": service["spec"]["selector"]}, pods)
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports[port]["targetPort"] == port
        assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
        assert port in scraped
        pdb = rendered[("PodDisruptionBudget", deployment_name)]
        assert selects(pdb["spec"]["selector"], pods) and pdb["spec"]["maxUnavailable"] == 1


def test_rbac_grants_the_loop_what_a_member_cluster_grants_and_no_more(rendered):
    member = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "config" / "kubernetes" / "rbac.yaml").read_text())}
    assert rendered[("ClusterRole", "spillover-member")]["rules"] == member["ClusterRole"]["rules"]
    binding = rendered[("ClusterRoleBinding", "spillover-member")]
    assert binding["roleRef"]["name"] == "spillover-member"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spillover", "namespace": NAMESPACE}]
    assert ("ServiceAccount", "spillover") in rendered and ("Namespace", NAMESPACE) in rendered
    assert not [k for k, _ in rendered if k in ("Role", "RoleBinding")]


@pytest.mark.parametrize("directory", ["overlays/example", "base"])
def test_the_config_in_the_config_map_is_valid(directory, rendered, tmp_path):
    objects = rendered if directory == "overlays/example" else render(ROOT / "deploy" / "kustomize" / directory)
    path = tmp_path / "spillover.yaml"
    path.write_text(one(objects, "ConfigMap", "spillover-config")["data"]["spillover.yaml"])
    done = subprocess.run([sys.executable, "-m", "spillover.scheduler.cli", "config", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout
    # no password in the ConfigMap: the store URL leaves it to PGPASSWORD from the Secret
    url = yaml.safe_load(path.read_text())["store"]["url"]
    assert url.startswith("postgresql+psycopg://") and ":" not in url.split("://", 1)[1].split("@", 1)[0]


# ---------------------------------------------------------------------------------------------------- applying

@pytest.fixture
def cluster(tmp_path):
    # kubectl sends a kubeconfig's token only over TLS, so this plain-HTTP server takes requests without one.
    kube = FakeKube(token=None, app_kinds=True).start()
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig", context="hub")
    yield kube, kubeconfig
    kube.close()
    assert not kube.errors, kube.errors[0]


def applied(output: str) -> dict[str, str]:
    """`kind.group/name` -> created, unchanged or configured, from kubectl apply's output."""
    return {line.split()[0]: line.split()[1] for line in output.splitlines() if line.strip()}


def live(kubeconfig: Path) -> dict[tuple[str, str], dict]:
    out = kubectl("get", "deploy,svc,cm,secret,servicemonitor", "-n", NAMESPACE, "-o", "json", kubeconfig=kubeconfig)
    return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(out)["items"]}


def test_apply_installs_everything_reapply_changes_nothing_and_a_config_change_rolls(cluster, tmp_path):
    kube, kubeconfig = cluster
    tree = tmp_path / "kustomize"
    shutil.copytree(ROOT / "deploy" / "kustomize", tree)
    overlay = tree / "overlays" / "example"

    assert "created" in kubectl("apply", "-f", str(SERVICE_MONITOR_CRD), kubeconfig=kubeconfig)
    first = applied(kubectl("apply", "-k", str(overlay), kubeconfig=kubeconfig))
    expected = render(overlay)
    assert len(first) == len(expected) and set(first.values()) == {"created"}

    objects = live(kubeconfig)
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "ServiceMonitor"):
        want = {name for k, name in expected if k == kind}
        assert {name for k, name in objects if k == kind} == want, kind
    config_map = one(objects, "ConfigMap", "spillover-config")["metadata"]["name"]
    assert [o["metadata"]["name"] for o in kube.objects("clusterrolebindings")] == ["spillover-member"]
    assert {o["metadata"]["name"] for o in kube.objects("poddisruptionbudgets", NAMESPACE)} == \
        {"spillover-api", "spillover-loop"}

    # Applying the same manifests again changes nothing. kubectl says "configured" for the two
    # PodDisruptionBudgets all the same: their selector's patch strategy is replace, so its patch is never empty
    # (against any API server); the objects keep their resourceVersion all the same.
    versions = {key: o["metadata"]["resourceVersion"] for key, o in objects.items()}
    again = applied(kubectl("apply", "-k", str(overlay), kubeconfig=kubeconfig))
    changed = {what for what, verb in again.items() if verb != "unchanged"}
    assert changed <= {"poddisruptionbudget.policy/spillover-api", "poddisruptionbudget.policy/spillover-loop"}
    assert {key: o["metadata"]["resourceVersion"] for key, o in live(kubeconfig).items()} == versions
    assert all(o["metadata"]["generation"] == 1 for o in kube.objects("poddisruptionbudgets", NAMESPACE))

    # A changed config is a new ConfigMap (a new hash), and both Deployments move to it: a rollout.
    config_file = overlay / "spillover.yaml"
    config_file.write_text(config_file.read_text().replace("interval_s: 30", "interval_s: 15"))
    third = applied(kubectl("apply", "-k", str(overlay), kubeconfig=kubeconfig))
    assert third["deployment.apps/spillover-api"] == third["deployment.apps/spillover-loop"] == "configured"
    objects = live(kubeconfig)
    new_names = {name for k, name in objects if k == "ConfigMap"} - {config_map}
    assert len(new_names) == 1
    (new_name,) = new_names
    assert third[f"configmap/{new_name}"] == "created"
    assert "interval_s: 15" in objects[("ConfigMap", new_name)]["data"]["spillover.yaml"]
    for name in ("spillover-api", "spillover-loop"):
        deployment = objects[("Deployment", name)]
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        assert volumes["config"]["configMap"]["name"] == new_name
        assert deployment["metadata"]["generation"] == 2
        # the rest of the pod template is as it was: the patch touched the one volume
        assert [v["name"] for v in pod_spec(deployment)["volumes"]] == \
            [v["name"] for v in pod_spec(expected[("Deployment", name)])["volumes"]]
        assert pod_spec(deployment)["containers"][0]["envFrom"] == \
            pod_spec(expected[("Deployment", name)])["containers"][0]["envFrom"]
