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


@dataclass(frozen=True, slots=True)
class AirflowCredential:
    mode: str  # "jwt-hs512"
    signing_secret: SecretRef
    audience: str = "apache-airflow"
    issuer: str | None = None
    lifetime_seconds: int = 120


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


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    pool_size: int = 100


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
                     "trusted_proxies", "lookup_cache_seconds"})
    host, port = _listen(r, data)
    issuers = _issuers(r, data)
    upstreams = _upstreams(r, data)
    policy = _policy(r, data)
    audit = _audit(r, data)
    limits = _limits(r, data)
    trusted = _trusted_proxies(r, data)
    lookup_ttl = r.positive(data, "lookup_cache_seconds", 300.0)
    if r.problems:
        raise ConfigError(r.problems)
    assert policy is not None
    return Settings(issuers=tuple(issuers), upstreams=tuple(upstreams), policy=policy,
                    audit=audit, host=host, port=port, limits=limits, trusted_proxies=trusted,
                    lookup_cache_seconds=lookup_ttl, source=source)


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
        if data.get("upstreams") == {}:
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
    r.mapping(cred, {"mode", "signing_secret", "signing_secret_file", "audience", "issuer",
                     "lifetime_seconds"})
    mode = r.get(cred, "mode", str, "jwt-hs512")
    if mode != "jwt-hs512":
        r.problem("mode", f"unknown mode {mode!r} (supported: jwt-hs512)")
    secret = r.secret(cred, "signing_secret")
    lifetime = r.get(cred, "lifetime_seconds", int, 120)
    if not 10 <= lifetime <= 300:
        r.problem("lifetime_seconds", "must be between 10 and 300 (at most 5 minutes)")
    if secret is None:
        return None
    return AirflowCredential(mode=mode, signing_secret=secret,
                             audience=r.get(cred, "audience", str, "apache-airflow"),
                             issuer=r.get(cred, "issuer", str), lifetime_seconds=lifetime)


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
        r.mapping(audit, {"file", "stdout"})
        file = r.get(audit, "file", str)
        stdout = r.get(audit, "stdout", bool, True)
        path = r.path(file) if file else None
        if path is not None and not path.parent.is_dir():
            r.problem("file", f"directory does not exist: {path.parent}")
    return AuditSettings(file=path, stdout=stdout)


def _limits(r: _Reader, data: Mapping[str, Any]) -> Limits:
    lim = r.get(data, "limits", dict, {})
    d = Limits()
    with r.at("limits"):
        r.mapping(lim, {"max_body_bytes", "max_header_bytes", "connect_timeout_seconds",
                        "read_timeout_seconds", "pool_size"})
        return Limits(
            max_body_bytes=int(r.positive(lim, "max_body_bytes", d.max_body_bytes)),
            max_header_bytes=int(r.positive(lim, "max_header_bytes", d.max_header_bytes)),
            connect_timeout_seconds=r.positive(lim, "connect_timeout_seconds",
                                               d.connect_timeout_seconds),
            read_timeout_seconds=r.positive(lim, "read_timeout_seconds", d.read_timeout_seconds),
            pool_size=int(r.positive(lim, "pool_size", d.pool_size)),
        )


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
