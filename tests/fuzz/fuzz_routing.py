"""Coverage-guided fuzzing (atheris, libFuzzer) of the edge's path canonicalization and the
catalog match, with the same properties as tests/security/test_routing_properties.py:

- the canonical path is idempotent, clean, and what the upstream's server decodes;
- a request orchgate accepts under an operation is routed by the upstream (its real route
  table, tests/security/routing_model.py) to that operation or to none.

Not collected by pytest (not named test_*). Run it for N seconds with `make fuzz
FUZZ_SECONDS=600`, or directly:

    .venv/bin/python tests/fuzz/fuzz_routing.py -max_total_time=600 tests/fuzz/corpus

A crash writes `crash-<sha1>` (the raw input) in the current directory and exits non-zero;
replay it with `.venv/bin/python tests/fuzz/fuzz_routing.py crash-<sha1>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from proxy.catalog.operation import Catalog
    from proxy.edge import canonical_path
    from tests.security.routing_model import CATALOGS, check_canonical, check_one_meaning

METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "WEBSOCKET")
PREFIXES = (b"/airflow/api/v2", b"/prefect/api", b"")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    prefix = PREFIXES[fdp.ConsumeIntInRange(0, len(PREFIXES) - 1)]
    raw = prefix + b"/" + fdp.ConsumeBytes(fdp.remaining_bytes())
    check_canonical(raw)
    check_one_meaning(raw, method)


def main() -> None:
    assert isinstance(CATALOGS["airflow"], Catalog) and callable(canonical_path)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
