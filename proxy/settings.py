"""The YAML configuration file → typed, validated settings.

Every problem is reported at once, each naming the file, the key path and the reason
(``orchgate.yaml: issuers[0].audiences: must not be empty``). Secrets are never inline:
a key ending in ``_file`` holds a path, any other secret key holds ``env:NAME``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

# Asymmetric algorithms only: `none` and HS* would let anyone holding the (public) key mint tokens.
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                "ES256", "ES384", "EdDSA"})
AIRFLOW_ROLES = ("viewer", "user", "op", "admin")


class ConfigError(Exception):
    """One or more problems in a configuration file; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives: a file (re-readable, for rotation) or an environment variable."""

    file: Path | None = None
    env: str | None = None

    def read(self) -> str:
        if self.file is not None:
            return self.file.read_text(encoding="utf-8").strip()
        assert self.env is not None
        value = os.environ.get(self.env)
        if not value:
            raise ValueError(f"environment variable {self.env} is not set")
        return value

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"env {self.env}"


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256",)
    jwks_uri: str | None = None  # None: taken from OpenID discovery
    groups_claim: str = "groups"  # dotted path into the claims
    leeway_seconds: int = 30
    jwks_cooldown_seconds: float = 30.0
    jwks_max_stale_seconds: float = 3600.0
    jwks_refresh_seconds: float = 300.0


AIRFLOW_CREDENTIAL_MODES = ("jwt-hs512", "jwt-rs256", "password")


@dataclass(frozen=True, slots=True)
class AirflowCredential:
    # "jwt-hs512": per-caller tokens signed with Airflow's `[api_auth] jwt_secret`;
    # "jwt-rs256": per-caller tokens signed with a private key whose public half orchgate
    #   serves at /_orchgate/airflow/jwks.json (Airflow's `[api_auth] trusted_jwks_url`);
    # "password": one service account's token from Airflow's `POST /auth/token`.
    mode: str
    signing_secret: SecretRef | None = None  # jwt-hs512
    audience: str = "apache-airflow"
    issuer: str | None = None
    lifetime_seconds: int = 120
    signing_key: SecretRef | None = None  # jwt-rs256: a PEM RSA private key
    key_id: str | None = None  # jwt-rs256: the `kid`; default its RFC 7638 thumbprint
    jwks_extra: Path | None = None  # jwt-rs256: more public keys to publish (Airflow's own)
    username: str | None = None  # password
    password: SecretRef | None = None  # password


@dataclass(frozen=True, slots=True)
class PrefectCredential:
    auth_string: SecretRef


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    name: str  # "airflow" | "prefect"
    url: str
    prefix: str
    airflow: AirflowCredential | None = None
    prefect: PrefectCredential | None = None

    @property
    def api_root(self) -> str:
        return "/api/v2" if self.name == "airflow" else "/api"


@dataclass(frozen=True, slots=True)
class PolicySettings:
    model: Path
    files: tuple[Path, ...]
    shadow_files: tuple[Path, ...] = ()  # a candidate policy: evaluated and recorded, not enforced
    watch: bool = True  # reload when a file changes (SIGHUP always reloads)
    owner_tags: tuple[str, ...] = ()  # systems whose `owner:<team>` tags count as ownership


@dataclass(frozen=True, slots=True)
class AuditSettings:
    file: Path | None
    stdout: bool = True
    enabled: bool = True  # false: no trail at all (benchmarks only; never in production)
    fsync: bool = True  # intent records reach the disk before a mutating call is forwarded
    reads_on_failure: str = "serve"  # or "refuse": reads when the trail cannot be written
    checkpoint_key_file: Path | None = None  # Ed25519 private key (PEM) signing checkpoints
    checkpoint_every: int = 1000  # records between signed checkpoints …
    checkpoint_seconds: float = 60.0  # … or seconds, whichever comes first
    checkpoint_file: Path | None = None  # a second sink that receives every checkpoint
    rotate_bytes: int = 100 * 1024 * 1024  # rotate the file past this size …
    rotate_seconds: float = 0.0  # … or this age (0: never by age)


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    # The whole request body must arrive within this: a slow-drip body (slowloris) would hold
    # a connection to the upstream, and a slot of its pool, for as long as the caller likes.
    body_timeout_seconds: float = 60.0
    pool_size: int = 100


@dataclass(frozen=True, slots=True)
class RetrySettings:
    attempts: int = 2  # retries after the first attempt (0: never retry)
    backoff_seconds: float = 0.05  # the first backoff's ceiling; doubles, full jitter …
    max_backoff_seconds: float = 1.0  # … up to this
    budget_ratio: float = 0.1  # retries at most this share of an upstream's recent requests


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int = 5  # consecutive connect errors or timeouts that open the circuit
    cooldown_seconds: float = 10.0  # open this long, then one probe (half-open)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9090


@dataclass(frozen=True, slots=True)
class Settings:
    issuers: tuple[IssuerSettings, ...]
    upstreams: tuple[UpstreamSettings, ...]
    policy: PolicySettings
    audit: AuditSettings
    host: str = "127.0.0.1"
    port: int = 8080
    limits: Limits = field(default_factory=Limits)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    lookup_cache_seconds: float = 300.0
    retries: RetrySettings = field(default_factory=RetrySettings)
    circuit_breaker: BreakerSettings = field(default_factory=BreakerSettings)
    metrics: MetricsSettings | None = None  # None: no metrics endpoint
    source: str = "<settings>"

    def upstream(self, name: str) -> UpstreamSettings | None:
        return next((u for u in self.upstreams if u.name == name), None)


# ---------------------------------------------------------------------------------------------
# Parsing: a small reader that collects problems instead of stopping at the first.


class _Reader:
    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self.problems: list[str] = []
        self._path: list[str] = []

    def problem(self, key: str, reason: str) -> None:
        where = self.where(key)
        self.problems.append(f"{self.source}: {where}: {reason}" if where else
                             f"{self.source}: {reason}")

    def where(self, key: str = "") -> str:
        parts = [*self._path, key] if key else list(self._path)
        out = ""
        for part in parts:
            out += part if part.startswith("[") or not out else "." + part
        return out

    @contextmanager
    def at(self, key: str) -> Iterator[None]:
        self._path.append(key)
        try:
            yield
        finally:
            self._path.pop()

    def mapping(self, data: Mapping[str, Any], known: set[str]) -> None:
        for key in data:
            if key not in known:
                self.problem(str(key), f"unknown key (expected one of: {', '.join(sorted(known))})")

    def get(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
            default: Any = None, required: bool = False) -> Any:
        if key not in data or data[key] is None:
            if required:
                self.problem(key, "is required")
            return default
        value = data[key]
        # bool is an int in Python; a YAML `true` is never a valid number here.
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            self.problem(key, f"must be a number, not {value!r}")
            return default
        if not isinstance(value, kind):
            expected = (kind.__name__ if isinstance(kind, type)
                        else "/".join(k.__name__ for k in kind))
            self.problem(key, f"must be a {_kind_name(expected)}, not {type(value).__name__}")
            return default
        return value

    def positive(self, data: Mapping[str, Any], key: str, default: float) -> float:
        value = self.get(data, key, (int, float), default)
        if value <= 0:
            self.problem(key, "must be greater than 0")
            return default
        return float(value)

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.base / p)

    def url(self, data: Mapping[str, Any], key: str, exact: bool = False) -> str:
        """An http(s) URL; trailing slashes dropped unless `exact` (issuers compare exactly:
        Auth0 and Azure AD v1 issuers end in "/")."""
        value: str = self.get(data, key, str, "", required=True)
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.problem(key, f"must be an http(s) URL, not {value!r}")
            elif parts.query or parts.fragment or parts.username:
                self.problem(key, "must not contain credentials, a query or a fragment")
        return value if exact else value.rstrip("/")

    def secret(self, data: Mapping[str, Any], key: str) -> SecretRef | None:
        """`key: env:NAME` or `key_file: PATH`; exactly one of them; never an inline value."""
        inline, filed = data.get(key), data.get(f"{key}_file")
        if inline is not None and filed is not None:
            self.problem(key, f"give either {key} or {key}_file, not both")
            return None
        if filed is not None:
            if not isinstance(filed, str) or not filed:
                self.problem(f"{key}_file", "must be a file path")
                return None
            ref = SecretRef(file=self.path(filed))
            if not ref.file or not ref.file.is_file():
                self.problem(f"{key}_file", f"file not found: {ref.file}")
            return ref
        if inline is None:
            self.problem(key, f"is required (as env:NAME, or {key}_file: PATH)")
            return None
        if not isinstance(inline, str) or not inline.startswith("env:") or len(inline) <= 4:
            self.problem(key, f"secrets are never inline: use env:NAME or {key}_file: PATH")
            return None
        name = inline[4:]
        if name not in os.environ:
            self.problem(key, f"environment variable {name} is not set")
        return SecretRef(env=name)

    def each(self, items: list[Any], name: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
        for i, item in enumerate(items):
            with self.at(f"[{i}]"):
                if not isinstance(item, dict):
                    self.problem("", f"each {name} must be a mapping")
                    continue
                yield i, item


def _kind_name(name: str) -> str:
    return {"str": "string", "dict": "mapping", "list": "list", "int": "whole number",
            "int/float": "number", "bool": "boolean (true/false)"}.get(name, name)


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError([f"{source}: {line}not valid YAML"]) from None
    return parse_settings(data, source=source, base=path.resolve().parent)


def parse_settings(data: Any, *, source: str = "<settings>", base: Path | None = None) -> Settings:
    r = _Reader(source, base or Path.cwd())
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping"])
    r.mapping(data, {"listen", "issuers", "upstreams", "policy", "audit", "limits",
                     "trusted_proxies", "lookup_cache_seconds", "retries", "circuit_breaker",
                     "metrics"})
    host, port = _listen(r, data)
    issuers = _issuers(r, data)
    upstreams = _upstreams(r, data)
    policy = _policy(r, data)
    audit = _audit(r, data)
    limits = _limits(r, data)
    trusted = _trusted_proxies(r, data)
    lookup_ttl = r.positive(data, "lookup_cache_seconds", 300.0)
    retries, breaker = _retries(r, data), _breaker(r, data)
    metrics = _metrics(r, data)
    if r.problems:
        raise ConfigError(r.problems)
    assert policy is not None
    return Settings(issuers=tuple(issuers), upstreams=tuple(upstreams), policy=policy,
                    audit=audit, host=host, port=port, limits=limits, trusted_proxies=trusted,
                    lookup_cache_seconds=lookup_ttl, retries=retries,
                    circuit_breaker=breaker, metrics=metrics, source=source)


def _listen(r: _Reader, data: Mapping[str, Any]) -> tuple[str, int]:
    listen = r.get(data, "listen", dict, {})
    with r.at("listen"):
        r.mapping(listen, {"host", "port"})
        host: str = r.get(listen, "host", str, "127.0.0.1")
        port: int = r.get(listen, "port", int, 8080)
        if not 0 <= port <= 65535:
            r.problem("port", "must be between 0 and 65535")
    return host, port


def _issuers(r: _Reader, data: Mapping[str, Any]) -> list[IssuerSettings]:
    items = r.get(data, "issuers", list, [], required=True)
    if data.get("issuers") == []:  # a wrong type or a null is already reported
        r.problem("issuers", "must list at least one trusted issuer")
    out: list[IssuerSettings] = []
    with r.at("issuers"):
        for _, item in r.each(items, "issuer"):
            r.mapping(item, {"issuer", "audiences", "algorithms", "jwks_uri", "groups_claim",
                             "leeway_seconds", "jwks_cooldown_seconds",
                             "jwks_max_stale_seconds", "jwks_refresh_seconds"})
            issuer = r.url(item, "issuer", exact=True)
            audiences = r.get(item, "audiences", list, [], required=True)
            if item.get("audiences") == []:
                r.problem("audiences", "must not be empty")
            if any(not isinstance(a, str) or not a for a in audiences):
                r.problem("audiences", "each audience must be a non-empty string")
            algorithms = r.get(item, "algorithms", list, ["RS256"])
            if not algorithms:
                r.problem("algorithms", "must not be empty")
            for alg in algorithms:
                if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
                    r.problem("algorithms", f"{alg!r} is not allowed (allowed: "
                              f"{', '.join(sorted(ALLOWED_ALGORITHMS))})")
            jwks_uri = r.url(item, "jwks_uri") if "jwks_uri" in item else None
            leeway = r.get(item, "leeway_seconds", int, 30)
            if not 0 <= leeway <= 300:
                r.problem("leeway_seconds", "must be between 0 and 300")
            out.append(IssuerSettings(
                issuer=issuer,
                audiences=tuple(a for a in audiences if isinstance(a, str)),
                algorithms=tuple(algorithms),
                jwks_uri=jwks_uri,
                groups_claim=r.get(item, "groups_claim", str, "groups"),
                leeway_seconds=leeway,
                jwks_cooldown_seconds=r.positive(item, "jwks_cooldown_seconds", 30.0),
                jwks_max_stale_seconds=r.positive(item, "jwks_max_stale_seconds", 3600.0),
                jwks_refresh_seconds=r.positive(item, "jwks_refresh_seconds", 300.0),
            ))
    seen = [i.issuer for i in out]
    for dup in {i for i in seen if seen.count(i) > 1}:
        r.problem("issuers", f"issuer {dup} is listed twice")
    return out


_UPSTREAM_DEFAULT_PREFIX = {"airflow": "/airflow", "prefect": "/prefect"}


def _upstreams(r: _Reader, data: Mapping[str, Any]) -> list[UpstreamSettings]:
    ups = r.get(data, "upstreams", dict, {}, required=True)
    out: list[UpstreamSettings] = []
    with r.at("upstreams"):
        r.mapping(ups, set(_UPSTREAM_DEFAULT_PREFIX))
        if isinstance(data.get("upstreams"), dict) and not any(ups.values()):
            r.problem("", "configure at least one of: airflow, prefect")
        for name, parse in (("airflow", _airflow_credential), ("prefect", _prefect_credential)):
            item = r.get(ups, name, dict)
            if item is None:
                continue
            with r.at(name):
                r.mapping(item, {"url", "prefix", "credential"})
                url = r.url(item, "url")
                prefix = r.get(item, "prefix", str, _UPSTREAM_DEFAULT_PREFIX[name])
                if not prefix.startswith("/") or prefix.endswith("/") or prefix.count("/") != 1 \
                        or not prefix[1:].replace("-", "").replace("_", "").isalnum():
                    r.problem("prefix", "must be one path segment like /airflow")
                cred = r.get(item, "credential", dict, {}, required=True)
                with r.at("credential"):
                    credential: Callable[[_Reader, Mapping[str, Any]], Any] = parse
                    parsed = credential(r, cred)
            out.append(UpstreamSettings(
                name=name, url=url, prefix=prefix,
                airflow=parsed if name == "airflow" else None,
                prefect=parsed if name == "prefect" else None,
            ))
    prefixes = [u.prefix for u in out]
    if len(set(prefixes)) != len(prefixes):
        r.problem("upstreams", "two upstreams use the same prefix")
    if any(p == "/_orchgate" for p in prefixes):
        r.problem("upstreams", "the prefix /_orchgate is reserved")
    return out


def _airflow_credential(r: _Reader, cred: Mapping[str, Any]) -> AirflowCredential | None:
    mode = r.get(cred, "mode", str, "jwt-hs512")
    keys = {"jwt-hs512": {"signing_secret", "signing_secret_file"},
            "jwt-rs256": {"signing_key", "signing_key_file", "key_id", "jwks_extra_file"},
            "password": {"username", "password", "password_file"}}
    if mode not in keys:
        r.problem("mode", f"unknown mode {mode!r} (supported: "
                          f"{', '.join(AIRFLOW_CREDENTIAL_MODES)})")
        return None
    r.mapping(cred, {"mode", "audience", "issuer", "lifetime_seconds", *keys[mode]})
    lifetime = r.get(cred, "lifetime_seconds", int, 120)
    if not 10 <= lifetime <= 300:
        r.problem("lifetime_seconds", "must be between 10 and 300 (at most 5 minutes)")
    common: dict[str, Any] = {"mode": mode, "lifetime_seconds": lifetime,
                              "audience": r.get(cred, "audience", str, "apache-airflow"),
                              "issuer": r.get(cred, "issuer", str)}
    if mode == "jwt-hs512":
        secret = r.secret(cred, "signing_secret")
        return AirflowCredential(signing_secret=secret, **common) if secret else None
    if mode == "jwt-rs256":
        key = r.secret(cred, "signing_key")
        extra = r.get(cred, "jwks_extra_file", str)
        extra_path = r.path(extra) if extra else None
        if extra_path is not None and not extra_path.is_file():
            r.problem("jwks_extra_file", f"file not found: {extra_path}")
        return AirflowCredential(signing_key=key, key_id=r.get(cred, "key_id", str),
                                 jwks_extra=extra_path, **common) if key else None
    username = r.get(cred, "username", str, required=True)
    password = r.secret(cred, "password")
    return AirflowCredential(username=username, password=password, **common) \
        if username and password else None


def _prefect_credential(r: _Reader, cred: Mapping[str, Any]) -> PrefectCredential | None:
    r.mapping(cred, {"auth_string", "auth_string_file"})
    secret = r.secret(cred, "auth_string")
    return PrefectCredential(auth_string=secret) if secret is not None else None


def _policy(r: _Reader, data: Mapping[str, Any]) -> PolicySettings | None:
    pol = r.get(data, "policy", dict, {}, required=True)
    with r.at("policy"):
        r.mapping(pol, {"model", "files", "shadow_files", "watch", "owner_tags"})
        model = r.get(pol, "model", str, "", required="policy" in data)
        model_path = r.path(model) if model else None
        if model_path is not None and not model_path.is_file():
            r.problem("model", f"file not found: {model_path}")
        paths = _policy_files(r, pol, "files", required="policy" in data)
        shadow = _policy_files(r, pol, "shadow_files", required=False)
        watch = r.get(pol, "watch", bool, True)
        owner_tags = r.get(pol, "owner_tags", list, [])
        for system in owner_tags:
            if system not in _UPSTREAM_DEFAULT_PREFIX:
                r.problem("owner_tags", f"unknown system {system!r} (airflow, prefect)")
    if model_path is None:
        return None
    return PolicySettings(model=model_path, files=paths, shadow_files=shadow, watch=watch,
                          owner_tags=tuple(owner_tags))


def _policy_files(r: _Reader, pol: Mapping[str, Any], key: str, required: bool
                  ) -> tuple[Path, ...]:
    files = r.get(pol, key, list, [], required=required)
    if key in pol and pol[key] == [] and required:
        r.problem(key, "must list at least one policy file")
    paths: list[Path] = []
    for i, f in enumerate(files):
        if not isinstance(f, str):
            r.problem(f"{key}[{i}]", "must be a file path")
            continue
        path = r.path(f)
        if not path.is_file():
            r.problem(f"{key}[{i}]", f"file not found: {path}")
        paths.append(path)
    return tuple(paths)


def _audit(r: _Reader, data: Mapping[str, Any]) -> AuditSettings:
    audit = r.get(data, "audit", dict, {})
    with r.at("audit"):
        r.mapping(audit, {"file", "stdout", "enabled", "fsync", "reads_on_failure",
                          "checkpoint_key_file", "checkpoint_every", "checkpoint_seconds",
                          "checkpoint_file", "rotate_bytes", "rotate_seconds"})
        d = AuditSettings(file=None)
        file = r.get(audit, "file", str)
        stdout = r.get(audit, "stdout", bool, True)
        path = r.path(file) if file else None
        if path is not None and not path.parent.is_dir():
            r.problem("file", f"directory does not exist: {path.parent}")
        reads = r.get(audit, "reads_on_failure", str, d.reads_on_failure)
        if reads not in ("serve", "refuse"):
            r.problem("reads_on_failure", f"must be serve or refuse, not {reads!r}")
        key_name = r.get(audit, "checkpoint_key_file", str)
        key_file = r.path(key_name) if key_name else None
        if key_file is not None and not key_file.is_file():
            r.problem("checkpoint_key_file", f"file not found: {key_file}")
        checkpoints = r.get(audit, "checkpoint_file", str)
        checkpoint_file = r.path(checkpoints) if checkpoints else None
        if checkpoint_file is not None and not checkpoint_file.parent.is_dir():
            r.problem("checkpoint_file",
                      f"directory does not exist: {checkpoint_file.parent}")
        rotate_seconds = r.get(audit, "rotate_seconds", (int, float), 0)
        if rotate_seconds < 0:
            r.problem("rotate_seconds", "must be 0 (never) or greater")
    return AuditSettings(
        file=path, stdout=stdout, enabled=r.get(audit, "enabled", bool, True),
        fsync=r.get(audit, "fsync", bool, True), reads_on_failure=reads,
        checkpoint_key_file=key_file,
        checkpoint_every=int(r.positive(audit, "checkpoint_every", d.checkpoint_every)),
        checkpoint_seconds=r.positive(audit, "checkpoint_seconds", d.checkpoint_seconds),
        checkpoint_file=checkpoint_file,
        rotate_bytes=int(r.positive(audit, "rotate_bytes", d.rotate_bytes)),
        rotate_seconds=float(rotate_seconds))


def _limits(r: _Reader, data: Mapping[str, Any]) -> Limits:
    lim = r.get(data, "limits", dict, {})
    d = Limits()
    with r.at("limits"):
        r.mapping(lim, {"max_body_bytes", "max_header_bytes", "connect_timeout_seconds",
                        "read_timeout_seconds", "body_timeout_seconds", "pool_size"})
        return Limits(
            max_body_bytes=int(r.positive(lim, "max_body_bytes", d.max_body_bytes)),
            max_header_bytes=int(r.positive(lim, "max_header_bytes", d.max_header_bytes)),
            connect_timeout_seconds=r.positive(lim, "connect_timeout_seconds",
                                               d.connect_timeout_seconds),
            read_timeout_seconds=r.positive(lim, "read_timeout_seconds", d.read_timeout_seconds),
            body_timeout_seconds=r.positive(lim, "body_timeout_seconds", d.body_timeout_seconds),
            pool_size=int(r.positive(lim, "pool_size", d.pool_size)),
        )


def _retries(r: _Reader, data: Mapping[str, Any]) -> RetrySettings:
    item = r.get(data, "retries", dict, {})
    d = RetrySettings()
    with r.at("retries"):
        r.mapping(item, {"attempts", "backoff_seconds", "max_backoff_seconds", "budget_ratio"})
        attempts = r.get(item, "attempts", int, d.attempts)
        if not 0 <= attempts <= 5:
            r.problem("attempts", "must be between 0 and 5")
        ratio = r.get(item, "budget_ratio", (int, float), d.budget_ratio)
        if not 0 <= ratio <= 1:
            r.problem("budget_ratio", "must be between 0 and 1")
        return RetrySettings(
            attempts=attempts, budget_ratio=float(ratio),
            backoff_seconds=r.positive(item, "backoff_seconds", d.backoff_seconds),
            max_backoff_seconds=r.positive(item, "max_backoff_seconds", d.max_backoff_seconds))


def _breaker(r: _Reader, data: Mapping[str, Any]) -> BreakerSettings:
    item = r.get(data, "circuit_breaker", dict, {})
    d = BreakerSettings()
    with r.at("circuit_breaker"):
        r.mapping(item, {"failures", "cooldown_seconds"})
        return BreakerSettings(
            failures=int(r.positive(item, "failures", d.failures)),
            cooldown_seconds=r.positive(item, "cooldown_seconds", d.cooldown_seconds))


def _metrics(r: _Reader, data: Mapping[str, Any]) -> MetricsSettings | None:
    if data.get("metrics") is None:
        return None  # absent: no metrics endpoint
    item = r.get(data, "metrics", dict, {})
    d = MetricsSettings()
    with r.at("metrics"):
        r.mapping(item, {"host", "port"})
        host: str = r.get(item, "host", str, d.host)
        port: int = r.get(item, "port", int, d.port)
        if not 0 <= port <= 65535:
            r.problem("port", "must be between 0 and 65535")
    return MetricsSettings(host=host, port=port)


def _trusted_proxies(
    r: _Reader, data: Mapping[str, Any]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = r.get(data, "trusted_proxies", list, [])
    nets = []
    for i, item in enumerate(items):
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            r.problem(f"trusted_proxies[{i}]", f"not an IP address or network: {item!r}")
    return tuple(nets)
