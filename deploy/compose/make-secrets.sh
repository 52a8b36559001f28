#!/bin/sh
# Random upstream credentials (compose secrets) and the dev IdP's configuration. Run once;
# everything it writes is git-ignored and readable by you only.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(36))'; }
[ -s secrets/airflow-jwt-secret ] || rand > secrets/airflow-jwt-secret
[ -s secrets/prefect-auth-string ] || echo "orchgate:$(rand)" > secrets/prefect-auth-string
if [ ! -s dev-idp.json ]; then
  CLI=$(rand) CI=$(rand) AGENT=$(rand) python3 - <<'PY'
import json, os
users = {"alice": ["team-a-deployers"], "amy": ["team-a-readers"], "bob": ["team-b-operators"],
         "carol": ["platform-admins"], "dave": []}
clients = {"orchgate-cli": os.environ["CLI"], "ci-team-a": os.environ["CI"],
           "agent-team-b": os.environ["AGENT"]}
idp = {"host": "0.0.0.0", "port": 3000, "issuer": "http://idp:3000", "audience": "orchgate",
       "access_token_ttl": 3600,
       "clients": [{"client_id": c, "client_secret": s,
                    "kind": "human-login" if c == "orchgate-cli" else "service"}
                   for c, s in clients.items()],
       "users": [{"sub": u, "email": f"{u}@example.test", "name": u.title(), "groups": g}
                 for u, g in users.items()],
       "keys_file": "/var/lib/dev-idp/jwks.json"}
stack = {"issuer": "http://idp:3000", "clients": clients,
         "personas": {**{u: {"kind": "user", "client": "orchgate-cli"} for u in users},
                      "ci-team-a": {"kind": "service", "client": "ci-team-a"},
                      "agent-team-b": {"kind": "service", "client": "agent-team-b"}}}
json.dump(idp, open("dev-idp.json", "w"), indent=2)
json.dump(stack, open("stack.json", "w"), indent=2)
PY
fi
# The containers read these as their own users (orchgate: uid 10001, the dev IdP: node).
chmod 0444 secrets/* dev-idp.json stack.json
echo "secrets ready in $(pwd)/secrets"
