"""A policy mounted from a Kubernetes ConfigMap is reloaded when the kubelet updates it.

The kubelet never edits a mounted file: it writes a new timestamped directory, points a
temporary `..data_tmp` symlink at it, renames that over `..data` (one atomic rename), then
deletes the old directory (kubernetes pkg/volume/util/atomic_writer.go). The visible files
(`policy.csv -> ..data/policy.csv`) stay the same symlinks throughout; only what they resolve
to changes. This replays that sequence against a running orchgate.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.harness import FakeIdP, StartOrchgate, bearer, wait_for

ROOT = Path(__file__).resolve().parents[2]
DAG = "/airflow/api/v2/dags/team_a_etl"
FILES = ("model.conf", "policy.csv")


def _write_generation(mount: Path, name: str, contents: dict[str, str]) -> None:
    target = mount / name
    target.mkdir()
    for file, text in contents.items():
        (target / file).write_text(text, encoding="utf-8")


def kubelet_mount(mount: Path, contents: dict[str, str]) -> None:
    mount.mkdir()
    _write_generation(mount, "..2026_01_01_00_00_00.000000001", contents)
    os.symlink("..2026_01_01_00_00_00.000000001", mount / "..data")
    for file in contents:
        os.symlink(f"..data/{file}", mount / file)


def kubelet_update(mount: Path, contents: dict[str, str], stamp: str) -> None:
    old = os.readlink(mount / "..data")
    _write_generation(mount, stamp, contents)
    os.symlink(stamp, mount / "..data_tmp")
    os.rename(mount / "..data_tmp", mount / "..data")  # the atomic swap
    shutil.rmtree(mount / old)


def test_a_configmap_symlink_swap_is_reloaded(tmp_path: Path, idp: FakeIdP,
                                              start_orchgate: StartOrchgate) -> None:
    original = {f: (ROOT / "policies" / f).read_text(encoding="utf-8") for f in FILES}
    mount = tmp_path / "policies"
    kubelet_mount(mount, original)
    gate = start_orchgate(overrides={"policy": {"model": str(mount / "model.conf"),
                                                "files": [str(mount / "policy.csv")]}})
    dave = bearer(idp.token("dave", groups=["newcomers"]))
    with gate.client() as client:
        assert client.get(DAG, headers=dave).status_code == 403

        granted = dict(original)
        granted["policy.csv"] += "p, group:newcomers, airflow, team:a, read, allow\n"
        kubelet_update(mount, granted, "..2026_01_01_00_01_00.000000002")
        wait_for(lambda: client.get("/_orchgate/readyz").json()["checks"]["policy"]
                 ["generation"] == 2, what="the swapped ConfigMap is loaded")
        assert client.get(DAG, headers=dave).status_code == 200

        # A second swap, back: the old directory is gone, the symlinks resolve anew again.
        kubelet_update(mount, original, "..2026_01_01_00_02_00.000000003")
        wait_for(lambda: client.get("/_orchgate/readyz").json()["checks"]["policy"]
                 ["generation"] == 3, what="the second swap is loaded")
        assert client.get(DAG, headers=dave).status_code == 403
        assert sorted(p.name for p in mount.iterdir()) == [
            "..2026_01_01_00_02_00.000000003", "..data", "model.conf", "policy.csv"]
