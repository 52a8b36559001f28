"""Policy decisions at scale: orchgate's compiled index vs pycasbin's enforce_ex, same data.

Synthetic populations: 1,000 users, 200 groups, 2,000 Airflow workflows owned by 50 teams
(glob and exact ownership rows), 100 roles held by groups, and 100 / 1,000 / 10,000
permission rows. Requests: a user with 1–3 groups, a workflow, an action.

Reports per size: compile time (the first build: every row parsed), reload time (a build
after an edit: rows already seen are not parsed again), decision latency median / p99
uncached (every cache emptied before each call) and cached, casbin's enforce_ex latency on
the same requests (one call per principal, as orchgate decides), agreement between the two,
and RSS.
`make bench-policy`; results in benchmarks/results/<UTC date>-policy.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import casbin
from casbin.persist.adapters import FileAdapter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_results  # noqa: E402
from proxy.catalog.operation import Action  # noqa: E402
from proxy.policy import compile_policy, load_policy  # noqa: E402
from proxy.policy.engine import PolicySnapshot  # noqa: E402
from proxy.policy.model import _PARSED as parsed_rows  # noqa: E402

ACTIONS = ("read", "run", "deploy", "admin")
LADDER = "g3, admin, deploy\ng3, deploy, run\ng3, run, read\n" + "".join(
    f"g3, {a}, {a}\n" for a in ACTIONS) + "g3, admin, run\ng3, admin, read\ng3, deploy, read\n"


def population(rules: int, rng: random.Random) -> tuple[str, list[tuple[str, ...]]]:
    teams = [f"t{i}" for i in range(50)]
    workflows = [f"wf_{teams[i % 50]}_{i}" for i in range(2000)]
    users = [f"user:u{i}" for i in range(1000)]
    groups = [f"group:g{i}" for i in range(200)]
    roles = [f"role:r{i}" for i in range(100)]
    rows = [f"g2, wf_{t}_*, team:{t}, airflow" for t in teams]
    rows += [f"g2, {w}, team:{teams[(i * 7) % 50]}, *" for i, w in enumerate(workflows[:200])]
    rows += [f"g, {groups[i]}, {roles[i % 100]}" for i in range(200)]
    subjects = users + groups + roles
    for _ in range(rules):
        sub = rng.choice(subjects)
        kind = rng.random()
        obj = (f"team:{rng.choice(teams)}" if kind < 0.6
               else rng.choice(workflows) if kind < 0.98 else "*")
        eft = "deny" if rng.random() < 0.05 else "allow"
        rows.append(f"p, {sub}, {rng.choice(('airflow', '*'))}, {obj}, "
                    f"{rng.choice(ACTIONS)}, {eft}")
    requests = [(rng.choice(users), *rng.sample(groups, rng.randint(1, 3)),
                 rng.choice(workflows), rng.choice(ACTIONS)) for _ in range(5000)]
    return "\n".join(rows) + "\n", requests


def split(request: tuple[str, ...]) -> tuple[tuple[str, ...], str, Action]:
    return request[:-2], request[-2], Action.parse(request[-1])


def clear(snapshot: PolicySnapshot) -> None:
    for cache in (snapshot._cache, snapshot._subject_cache, snapshot._owners):
        cache.clear()


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {"median_us": round(statistics.median(ordered) / 1000, 2),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] / 1000, 2)}


def casbin_enforcer(model: Path, policy: Path) -> casbin.Enforcer:
    ladder = policy.with_suffix(".ladder.csv")
    ladder.write_text(policy.read_text() + LADDER)
    e = casbin.Enforcer(str(model), FileAdapter(str(ladder)))

    def glob(name: str, pattern: str) -> bool:
        return re.fullmatch("[^/]*".join(map(re.escape, pattern.split("*"))), name) is not None

    e.add_named_matching_func("g2", glob)
    e.add_named_domain_matching_func("g2", lambda req, row: row in ("*", req))
    e.build_role_links()
    return e


def casbin_decide(e: casbin.Enforcer, subjects: tuple[str, ...], workflow: str,
                  action: str) -> bool:
    allowed = False
    for subject in subjects:
        ok, rule = e.enforce_ex(subject, "airflow", workflow, action)
        if not ok and rule:
            return False
        allowed = allowed or ok
    return allowed


def measure(size: int, casbin_calls: int, rng: random.Random) -> dict[str, object]:
    text, requests = population(size, rng)
    with tempfile.TemporaryDirectory(prefix="orchgate-policy-") as tmp:
        policy = Path(tmp) / "policy.csv"
        policy.write_text(text)
        model = ROOT / "policies/model.conf"
        # Wall time includes the pauses a build makes every 100 rows to let the event loop
        # run (proxy/policy/model.py: yield_gil); CPU time is the work itself.
        compile_times, reload_times, compile_cpu, reload_cpu = [], [], [], []
        for edit in range(3):
            parsed_rows.clear()  # a first build: nothing parsed yet
            start, cpu = time.perf_counter(), time.process_time()
            snapshot = compile_policy(load_policy(model, [policy]), 1)
            compile_times.append(time.perf_counter() - start)
            compile_cpu.append(time.process_time() - cpu)
            policy.write_text(text + f"# edit {edit}\n")  # an edit, then the reload
            start, cpu = time.perf_counter(), time.process_time()
            snapshot = compile_policy(load_policy(model, [policy]), 2)
            reload_times.append(time.perf_counter() - start)
            reload_cpu.append(time.process_time() - cpu)
        uncached = []
        for request in requests:
            subjects, workflow, action = split(request)
            clear(snapshot)
            start = time.perf_counter_ns()
            snapshot.decide(subjects, "airflow", workflow, action)
            uncached.append(time.perf_counter_ns() - start)
        for request in requests:
            subjects, workflow, action = split(request)
            snapshot.decide(subjects, "airflow", workflow, action)
        cached = []
        for request in requests:
            subjects, workflow, action = split(request)
            start = time.perf_counter_ns()
            snapshot.decide(subjects, "airflow", workflow, action)
            cached.append(time.perf_counter_ns() - start)
        enforcer = casbin_enforcer(model, policy)
        casbin_ns, agree, allowed = [], 0, 0
        for request in requests[:casbin_calls]:
            subjects, workflow, action = split(request)
            start = time.perf_counter_ns()
            expected = casbin_decide(enforcer, subjects, workflow, action.label)
            casbin_ns.append(time.perf_counter_ns() - start)
            got = snapshot.decide(subjects, "airflow", workflow, action).allowed
            agree += got == expected
            allowed += got
    return {
        "permission_rows": size,
        "compile_seconds": round(min(compile_times), 3),
        "reload_seconds": round(min(reload_times), 3),
        "compile_cpu_seconds": round(min(compile_cpu), 3),
        "reload_cpu_seconds": round(min(reload_cpu), 3),
        "uncached": percentiles(uncached),
        "cached": percentiles(cached),
        "casbin_enforce_ex": percentiles(casbin_ns),
        "casbin_agreement": f"{agree}/{len(casbin_ns)}",
        "allowed_share": round(allowed / max(1, len(casbin_ns)), 2),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--casbin-calls", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(20261124)
    results = []
    for size in args.sizes:
        # casbin costs ~8 µs a row per principal: fewer calls at the largest size.
        calls = args.casbin_calls if size < 10000 else max(20, args.casbin_calls // 10)
        result = measure(size, calls, rng)
        results.append(result)
        print(json.dumps(result))
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report = {"date": date, "command": "make bench-policy",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "results": results}
    out = write_results(report, "policy")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
