"""Access tokens from the development identity provider (deploy/dev-idp/server.mjs).

Service accounts use the client_credentials grant; human personas use CIBA in poll mode,
which the development provider approves at once. As a command:

    export TOKEN=$(python deploy/local/idp_client.py --stack-file .stack/stack.json alice)

The stack file names the issuer, the client secrets and the personas:

    {"issuer": "http://127.0.0.1:9011",
     "clients": {"orchgate-cli": "<secret>", "ci-team-a": "<secret>"},
     "personas": {"alice": {"kind": "user", "client": "orchgate-cli"},
                  "ci-team-a": {"kind": "service", "client": "ci-team-a"}}}

A "user" persona logs in as the user whose `sub` is the persona's name.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx2

CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"
# CIBA Core 1.0 section 7.3: without an `interval` in the response, clients wait 5 s.
DEFAULT_POLL_INTERVAL = 5.0
POLL_BUDGET = 10.0
HTTP_TIMEOUT = 5.0


class IdpError(RuntimeError):
    """The identity provider refused a request or answered something unexpected."""


def service_token(issuer: str, client_id: str, client_secret: str) -> str:
    """Access token for a service account (client_credentials grant)."""
    with httpx2.Client(timeout=HTTP_TIMEOUT) as http:
        (token_endpoint,) = _discover(http, issuer, "token_endpoint")
        status, body = _post(
            http, token_endpoint, client_id, client_secret, {"grant_type": "client_credentials"}
        )
        if status != 200:
            raise _error("token request", body)
        return _access_token(body)


def user_token(
    issuer: str,
    client_id: str,
    client_secret: str,
    user: str,
    scope: str = "openid profile email groups",
) -> str:
    """Access token for `user` via CIBA: start a backchannel request, then poll for it."""
    with httpx2.Client(timeout=HTTP_TIMEOUT) as http:
        backchannel_endpoint, token_endpoint = _discover(
            http, issuer, "backchannel_authentication_endpoint", "token_endpoint"
        )
        status, started = _post(
            http,
            backchannel_endpoint,
            client_id,
            client_secret,
            {"scope": scope, "login_hint": user},
        )
        if status != 200:
            raise _error("backchannel authentication request", started)
        poll = {"grant_type": CIBA_GRANT_TYPE, "auth_req_id": str(started["auth_req_id"])}
        interval = float(started.get("interval", DEFAULT_POLL_INTERVAL))
        deadline = time.monotonic() + POLL_BUDGET
        while True:
            status, body = _post(http, token_endpoint, client_id, client_secret, poll)
            if status == 200:
                return _access_token(body)
            if body.get("error") == "slow_down":
                interval += 5  # CIBA Core 1.0 section 11: add at least 5 s per slow_down
            elif body.get("error") != "authorization_pending":
                raise _error("CIBA token request", body)
            if time.monotonic() + interval > deadline:
                raise IdpError(f"login of {user!r} not approved within {POLL_BUDGET:.0f} s")
            time.sleep(interval)


def _discover(http: httpx2.Client, issuer: str, *endpoints: str) -> list[str]:
    """The named endpoint URLs from the issuer's OpenID Provider metadata."""
    response = http.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
    response.raise_for_status()
    metadata: dict[str, Any] = response.json()
    missing = [name for name in endpoints if not isinstance(metadata.get(name), str)]
    if missing:
        raise IdpError(f"{issuer} does not advertise {', '.join(missing)}")
    return [metadata[name] for name in endpoints]


def _post(
    http: httpx2.Client, url: str, client_id: str, client_secret: str, form: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    # RFC 6749 section 2.3.1: form-encode id and secret before the Basic encoding.
    auth = httpx2.BasicAuth(quote_plus(client_id), quote_plus(client_secret))
    response = http.post(url, data=form, auth=auth)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def _access_token(body: dict[str, Any]) -> str:
    token = body.get("access_token")
    if not isinstance(token, str):
        raise IdpError("token response has no access_token")
    return token


def _error(what: str, body: dict[str, Any]) -> IdpError:
    return IdpError(f"{what} failed: {body.get('error')}: {body.get('error_description')}")


def _token_for_persona(stack: dict[str, Any], persona: str) -> str:
    spec = stack["personas"][persona]
    client_id = spec["client"]
    secret = stack["clients"][client_id]
    if spec["kind"] == "service":
        return service_token(stack["issuer"], client_id, secret)
    if spec["kind"] == "user":
        return user_token(stack["issuer"], client_id, secret, user=persona)
    raise IdpError(f"persona {persona!r} has unknown kind {spec['kind']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print an access token for a dev-IdP persona.")
    parser.add_argument("--stack-file", type=Path, required=True, help="JSON stack file")
    parser.add_argument("persona", help="persona name from the stack file")
    args = parser.parse_args(argv)

    stack: dict[str, Any] = json.loads(args.stack_file.read_text())
    if args.persona not in stack["personas"]:
        known = ", ".join(sorted(stack["personas"]))
        parser.error(f"unknown persona {args.persona!r} (known: {known})")  # exits with 2
    try:
        print(_token_for_persona(stack, args.persona))
    except (IdpError, httpx2.HTTPError) as exc:
        print(f"idp_client: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
