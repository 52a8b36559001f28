"""proxy.settings: a valid file parses; every problem is one message naming file, key, reason."""

from __future__ import annotations

import copy
import ipaddress
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.settings import (
    AIRFLOW_CREDENTIAL_MODES,
    ALLOWED_ALGORITHMS,
    ConfigError,
    SecretRef,
    load_settings,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SECRET_ENV = "ORCHGATE_TEST_AIRFLOW_SECRET"
ALLOWED = ", ".join(sorted(ALLOWED_ALGORITHMS))

VALID: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 8081},
    "issuers": [{
        "issuer": "https://idp.example.com/realms/main",
        "audiences": ["orchgate"],
        "algorithms": ["RS256", "ES256"],
        "groups_claim": "realm_access.groups",
        "leeway_seconds": 10,
    }],
    "upstreams": {
        "airflow": {
            "url": "http://127.0.0.1:28080/",
            "credential": {"signing_secret": f"env:{SECRET_ENV}", "lifetime_seconds": 60},
        },
        "prefect": {
            "url": "http://127.0.0.1:4200",
            "prefix": "/flows-api",
            "credential": {"auth_string_file": "prefect-auth"},
        },
    },
    "policy": {"model": "model.conf", "files": ["policy.csv"]},
    "audit": {"file": "audit/audit.jsonl", "stdout": False},
    "limits": {"max_body_bytes": 1024, "read_timeout_seconds": 2.5},
    "trusted_proxies": ["10.0.0.0/8", "::1"],
}


@pytest.fixture
def confdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(POLICIES / "model.conf", tmp_path / "model.conf")
    shutil.copy(POLICIES / "policy.csv", tmp_path / "policy.csv")
    (tmp_path / "prefect-auth").write_text("admin:prefect-pass\n", encoding="utf-8")
    (tmp_path / "audit").mkdir()
    monkeypatch.setenv(SECRET_ENV, "airflow-signing-secret")
    return tmp_path


def write(confdir: Path, data: Any) -> Path:
    path = confdir / "orchgate.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def problems(confdir: Path, data: Any) -> list[str]:
    path = write(confdir, data)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def test_valid_config_parses(confdir: Path) -> None:
    settings = load_settings(write(confdir, VALID))

    assert settings.source == str(confdir / "orchgate.yaml")
    assert (settings.host, settings.port) == ("127.0.0.1", 8081)
    [issuer] = settings.issuers
    assert issuer.issuer == "https://idp.example.com/realms/main"
    assert issuer.audiences == ("orchgate",)
    assert issuer.algorithms == ("RS256", "ES256")
    assert issuer.groups_claim == "realm_access.groups"
    assert issuer.leeway_seconds == 10

    airflow, prefect = settings.upstream("airflow"), settings.upstream("prefect")
    assert airflow is not None and airflow.airflow is not None
    assert airflow.url == "http://127.0.0.1:28080"  # trailing slash dropped
    assert airflow.prefix == "/airflow"  # the default
    assert airflow.api_root == "/api/v2"
    assert airflow.airflow.signing_secret == SecretRef(env=SECRET_ENV)
    assert airflow.airflow.signing_secret.read() == "airflow-signing-secret"
    assert airflow.airflow.lifetime_seconds == 60
    assert airflow.airflow.audience == "apache-airflow"
    assert prefect is not None and prefect.prefect is not None
    assert prefect.prefix == "/flows-api"
    assert prefect.api_root == "/api"
    # Relative paths are read against the config file's directory.
    assert prefect.prefect.auth_string == SecretRef(file=confdir / "prefect-auth")
    assert prefect.prefect.auth_string.read() == "admin:prefect-pass"

    assert settings.policy.model == confdir / "model.conf"
    assert settings.policy.files == (confdir / "policy.csv",)
    assert settings.audit.file == confdir / "audit" / "audit.jsonl"
    assert settings.audit.stdout is False
    assert settings.limits.max_body_bytes == 1024
    assert settings.limits.read_timeout_seconds == 2.5
    assert settings.limits.pool_size == 100  # the default
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),
                                        ipaddress.ip_network("::1/128"))


def test_secret_file_and_env_forms_are_both_accepted(confdir: Path) -> None:
    (confdir / "airflow-secret").write_text("from-a-file\n", encoding="utf-8")
    data = valid()
    data["upstreams"]["airflow"]["credential"] = {"signing_secret_file": "airflow-secret"}
    data["upstreams"]["prefect"]["credential"] = {"auth_string": f"env:{SECRET_ENV}"}

    settings = load_settings(write(confdir, data))

    airflow, prefect = settings.upstream("airflow"), settings.upstream("prefect")
    assert airflow is not None and airflow.airflow is not None
    assert airflow.airflow.signing_secret is not None
    assert airflow.airflow.signing_secret.read() == "from-a-file"
    assert prefect is not None and prefect.prefect is not None
    assert prefect.prefect.auth_string.read() == "airflow-signing-secret"


def test_an_env_secret_unset_at_read_time_is_an_error_not_an_empty_string(
        confdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(write(confdir, VALID))
    airflow = settings.upstream("airflow")
    assert airflow is not None and airflow.airflow is not None
    secret = airflow.airflow.signing_secret
    assert secret is not None
    monkeypatch.delenv(SECRET_ENV)

    with pytest.raises(ValueError, match=SECRET_ENV):
        secret.read()


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

# (key to change, new value, the one problem expected after "orchgate.yaml: ")
SINGLE_PROBLEMS: list[tuple[str, Any, str]] = [
    ("issuers.0.audiences", [], "issuers[0].audiences: must not be empty"),
    ("issuers.0.audiences", "orchgate", "issuers[0].audiences: must be a list, not str"),
    ("issuers.0.audiences", None, "issuers[0].audiences: is required"),
    ("issuers.0.audiences", [""], "issuers[0].audiences: each audience must be a non-empty string"),
    ("issuers.0.algorithms", ["none"],
     f"issuers[0].algorithms: 'none' is not allowed (allowed: {ALLOWED})"),
    ("issuers.0.algorithms", ["HS256"],
     f"issuers[0].algorithms: 'HS256' is not allowed (allowed: {ALLOWED})"),
    ("issuers.0.algorithms", [["RS256"]],
     f"issuers[0].algorithms: ['RS256'] is not allowed (allowed: {ALLOWED})"),
    ("issuers.0.algorithms", [], "issuers[0].algorithms: must not be empty"),
    ("issuers.0.issuer", "idp.example.com",
     "issuers[0].issuer: must be an http(s) URL, not 'idp.example.com'"),
    ("issuers.0.issuer", "https://user:pw@idp.example.com",
     "issuers[0].issuer: must not contain credentials, a query or a fragment"),
    ("issuers.0.leeway_seconds", 301, "issuers[0].leeway_seconds: must be between 0 and 300"),
    ("issuers.0.leeway_seconds", "10",
     "issuers[0].leeway_seconds: must be a whole number, not str"),
    ("issuers.0.jwks_cooldown_seconds", 0,
     "issuers[0].jwks_cooldown_seconds: must be greater than 0"),
    ("issuers", [], "issuers: must list at least one trusted issuer"),
    ("issuers", {"issuer": "https://idp.example.com"}, "issuers: must be a list, not dict"),
    ("issuers", ["https://idp.example.com"], "issuers[0]: each issuer must be a mapping"),
    ("upstreams.airflow.credential.signing_secret", "hunter2",
     "upstreams.airflow.credential.signing_secret: secrets are never inline: "
     "use env:NAME or signing_secret_file: PATH"),
    ("upstreams.airflow.credential.signing_secret", "env:",
     "upstreams.airflow.credential.signing_secret: secrets are never inline: "
     "use env:NAME or signing_secret_file: PATH"),
    ("upstreams.airflow.credential.signing_secret", "env:ORCHGATE_TEST_NOT_SET",
     "upstreams.airflow.credential.signing_secret: "
     "environment variable ORCHGATE_TEST_NOT_SET is not set"),
    ("upstreams.airflow.credential.signing_secret", _DELETE,
     "upstreams.airflow.credential.signing_secret: is required "
     "(as env:NAME, or signing_secret_file: PATH)"),
    ("upstreams.airflow.credential.signing_secret_file", "missing-file",
     "upstreams.airflow.credential.signing_secret: "
     "give either signing_secret or signing_secret_file, not both"),
    ("upstreams.prefect.credential.auth_string_file", "nowhere",
     "upstreams.prefect.credential.auth_string_file: file not found: {dir}/nowhere"),
    ("upstreams.airflow.credential.lifetime_seconds", 301,
     "upstreams.airflow.credential.lifetime_seconds: "
     "must be between 10 and 300 (at most 5 minutes)"),
    ("upstreams.airflow.credential.lifetime_seconds", True,
     "upstreams.airflow.credential.lifetime_seconds: must be a number, not True"),
    ("upstreams.airflow.credential.mode", "jwt-none",
     "upstreams.airflow.credential.mode: unknown mode 'jwt-none' "
     f"(supported: {', '.join(AIRFLOW_CREDENTIAL_MODES)})"),
    ("upstreams.airflow.url", "ftp://127.0.0.1:21",
     "upstreams.airflow.url: must be an http(s) URL, not 'ftp://127.0.0.1:21'"),
    ("upstreams.airflow.url", "http://127.0.0.1:28080/?debug=1",
     "upstreams.airflow.url: must not contain credentials, a query or a fragment"),
    ("upstreams.airflow.url", _DELETE, "upstreams.airflow.url: is required"),
    ("upstreams.prefect.prefix", "/airflow", "upstreams: two upstreams use the same prefix"),
    ("upstreams.prefect.prefix", "/a/b", "upstreams.prefect.prefix: must be one path segment "
     "like /airflow"),
    ("upstreams.prefect.prefix", "/_orchgate", "upstreams: the prefix /_orchgate is reserved"),
    ("upstreams", {}, "upstreams: configure at least one of: airflow, prefect"),
    ("upstreams", [], "upstreams: must be a mapping, not list"),
    ("policy.files", [], "policy.files: must list at least one policy file"),
    ("policy.files", [7], "policy.files[0]: must be a file path"),
    ("policy.files", "policy.csv", "policy.files: must be a list, not str"),
    ("policy.model", "absent.conf", "policy.model: file not found: {dir}/absent.conf"),
    ("policy", _DELETE, "policy: is required"),
    ("audit.file", "no-such-dir/audit.jsonl",
     "audit.file: directory does not exist: {dir}/no-such-dir"),
    ("audit.stdout", "yes please", "audit.stdout: must be a boolean (true/false), not str"),
    ("listen.port", 70000, "listen.port: must be between 0 and 65535"),
    ("listen.port", "8080", "listen.port: must be a whole number, not str"),
    ("limits.pool_size", -1, "limits.pool_size: must be greater than 0"),
    ("limits.max_body_bytes", "10MB", "limits.max_body_bytes: must be a number, not str"),
    ("trusted_proxies", ["10.0.0.0/8", "proxy.local"],
     "trusted_proxies[1]: not an IP address or network: 'proxy.local'"),
    ("lookup_cache_seconds", 0, "lookup_cache_seconds: must be greater than 0"),
]


@pytest.mark.parametrize(("key", "value", "expected"), SINGLE_PROBLEMS,
                         ids=[f"{k}={v!r}" for k, v, _ in SINGLE_PROBLEMS])
def test_each_problem_is_one_message_naming_file_key_and_reason(
        confdir: Path, key: str, value: Any, expected: str) -> None:
    data = _set(valid(), key, value)

    found = problems(confdir, data)

    assert found == [f"{confdir / 'orchgate.yaml'}: {expected.format(dir=confdir)}"]


# (key to add, where it is reported, a key the message must offer instead)
UNKNOWN_KEYS: list[tuple[str, str, str]] = [
    ("listn", "listn", "listen"),
    ("issuers.0.audience", "issuers[0].audience", "audiences"),
    ("upstreams.dagster", "upstreams.dagster", "prefect"),
    ("upstreams.airflow.credential.secret", "upstreams.airflow.credential.secret",
     "signing_secret_file"),
    ("audit.colour", "audit.colour", "stdout"),
    ("limits.max_bytes", "limits.max_bytes", "max_body_bytes"),
]


@pytest.mark.parametrize(("key", "where", "offered"), UNKNOWN_KEYS,
                         ids=[k for k, _, _ in UNKNOWN_KEYS])
def test_an_unknown_key_is_one_message_listing_the_known_ones(
        confdir: Path, key: str, where: str, offered: str) -> None:
    data = _set(valid(), key, 1)

    [found] = problems(confdir, data)

    prefix = f"{confdir / 'orchgate.yaml'}: {where}: unknown key (expected one of: "
    assert found.startswith(prefix) and found.endswith(")")
    known = found.removeprefix(prefix)[:-1].split(", ")
    assert offered in known
    assert known == sorted(known)
    assert key.rsplit(".", 1)[-1] not in known


def test_several_problems_are_reported_at_once(confdir: Path) -> None:
    data = valid()
    data["issuers"][0]["audiences"] = []
    data["issuers"][0]["algorithms"] = ["RS256", "none", "HS256"]
    data["upstreams"]["airflow"]["credential"]["signing_secret"] = "inline-secret"
    data["upstreams"]["airflow"]["credential"]["lifetime_seconds"] = 3600
    data["upstreams"]["prefect"]["url"] = "ftp://127.0.0.1"
    data["upstreams"]["prefect"]["prefix"] = "/airflow"
    data["audit"]["stdout"] = "no"
    data["trusted_proxies"] = ["300.0.0.1"]
    source = confdir / "orchgate.yaml"

    found = problems(confdir, data)

    assert found == [
        f"{source}: issuers[0].audiences: must not be empty",
        f"{source}: issuers[0].algorithms: 'none' is not allowed (allowed: {ALLOWED})",
        f"{source}: issuers[0].algorithms: 'HS256' is not allowed (allowed: {ALLOWED})",
        f"{source}: upstreams.airflow.credential.lifetime_seconds: "
        "must be between 10 and 300 (at most 5 minutes)",
        f"{source}: upstreams.airflow.credential.signing_secret: secrets are never inline: "
        "use env:NAME or signing_secret_file: PATH",
        f"{source}: upstreams.prefect.url: must be an http(s) URL, not 'ftp://127.0.0.1'",
        f"{source}: upstreams: two upstreams use the same prefix",
        f"{source}: audit.stdout: must be a boolean (true/false), not str",
        f"{source}: trusted_proxies[0]: not an IP address or network: '300.0.0.1'",
    ]


def test_an_inline_secret_never_appears_in_the_message(confdir: Path) -> None:
    data = valid()
    data["upstreams"]["airflow"]["credential"]["signing_secret"] = "s3cr3t-value"

    found = problems(confdir, data)

    assert len(found) == 1
    assert "s3cr3t-value" not in found[0]


def test_invalid_yaml_names_the_line(confdir: Path) -> None:
    path = confdir / "orchgate.yaml"
    path.write_text("listen:\n  port: 8080\nissuers: [\n  - oops: {\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_settings(path)

    [message] = info.value.problems
    assert message.startswith(f"{path}: line ")
    assert message.endswith(": not valid YAML")
    line = int(message.removeprefix(f"{path}: line ").split(":")[0])
    assert 3 <= line <= 5  # where the unterminated flow collection is detected


def test_a_tab_indented_line_is_named(confdir: Path) -> None:
    path = confdir / "orchgate.yaml"
    path.write_text("listen:\n  host: 127.0.0.1\n\tport: 8080\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_settings(path)

    assert info.value.problems == [f"{path}: line 3: not valid YAML"]


@pytest.mark.parametrize("text", ["", "- a list\n", "just a string\n"])
def test_the_top_level_must_be_a_mapping(confdir: Path, text: str) -> None:
    path = confdir / "orchgate.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_settings(path)

    assert info.value.problems == [f"{path}: the top level must be a mapping"]


def test_an_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as info:
        load_settings(path)

    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]
