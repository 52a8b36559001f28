"""deploy/compose/compose.yaml against the Compose Specification's JSON schema (the copy
that check-jsonschema vendors), plus the properties the deployment promises."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy/compose/compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text(encoding="utf-8"))
    return schema


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(compose)]
    assert errors == []
    # The schema is strict about unknown keys: a typo is caught, not ignored.
    broken = {**compose, "services": {**compose["services"],
                                      "orchgate": {**compose["services"]["orchgate"],
                                                   "port": ["8080:8080"]}}}
    assert list(validator.iter_errors(broken))


def test_services_the_issue_names_are_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"orchgate", "dev-idp", "airflow-api", "airflow-scheduler", "airflow-dag-processor",
            "airflow-db", "prefect-server", "prefect-db"} <= set(services)
    airflow_images = {s.get("image") for n, s in services.items() if n.startswith("airflow-")
                      and n != "airflow-db"} | {compose["x-airflow"]["image"]}
    assert airflow_images == {"apache/airflow:3.3.2"}
    assert services["prefect-server"]["image"].startswith("prefecthq/prefect:3.9.1")
    assert services["dev-idp"]["build"]["context"] == "../dev-idp"
    assert (ROOT / "deploy/dev-idp/Dockerfile").is_file()


def test_only_orchgate_publishes_a_port(compose: dict[str, Any]) -> None:
    published = {name for name, s in compose["services"].items() if s.get("ports")}
    assert published == {"orchgate"}


def test_upstream_credentials_are_compose_secrets(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services["orchgate"]["secrets"]) == {"airflow_jwt_secret", "prefect_auth_string"}
    assert set(compose["secrets"]) == {"airflow_jwt_secret", "prefect_auth_string"}
    text = COMPOSE.read_text(encoding="utf-8")
    assert "JWT_SECRET:" not in text and "AUTH_STRING:" not in text  # never inline
    config = yaml.safe_load((ROOT / "deploy/compose/orchgate.yaml").read_text())
    creds = config["upstreams"]
    assert creds["airflow"]["credential"]["signing_secret_file"].startswith("/run/secrets/")
    assert creds["prefect"]["credential"]["auth_string_file"].startswith("/run/secrets/")


def test_upstreams_are_on_internal_networks_only(compose: dict[str, Any]) -> None:
    networks = compose["networks"]
    for name in ("airflow-api", "airflow-scheduler", "airflow-dag-processor", "prefect-server",
                 "airflow-db", "prefect-db"):
        service = compose["services"][name]
        joined = service.get("networks", compose["x-airflow"]["networks"])
        assert joined and all(networks[n].get("internal") for n in joined), (name, joined)
    # Airflow's API (with its execution API) is shared with orchgate and no other edge service.
    reach_api = {n for n, s in compose["services"].items()
                 if "airflow-api" in (s.get("networks") or [])}
    assert reach_api == {"orchgate", "airflow-api"}


def test_orchgate_runs_read_only_with_a_writable_audit_volume(compose: dict[str, Any]) -> None:
    orchgate = compose["services"]["orchgate"]
    assert orchgate["read_only"] is True
    assert any(v.endswith(":/var/log/orchgate") for v in orchgate["volumes"])
    assert any(v.endswith("/etc/orchgate/orchgate.yaml:ro") for v in orchgate["volumes"])
