"""Build and run orchgate's image without a Docker engine: Debian's buildah (DESIGN.md §8).

There is no `python:*-slim` image to pull here, so the base is made locally: debootstrap a
minimal Debian bookworm with its python3, commit it as an image, and cache it in buildah's
store under a tag naming the ISO week (a week-old base is rebuilt; on one machine the ~80 s
debootstrap runs at most once a week). The Dockerfile takes it as `BASE_IMAGE`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STORAGE = ("--storage-driver", "vfs")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
IMAGE = "localhost/orchgate:test"
BUILD_TIMEOUT = 900.0


def buildah(*args: str, timeout: float = BUILD_TIMEOUT, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["buildah", *STORAGE, *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type", "image", name, check=False).returncode == 0


def base_image_name(today: dt.date | None = None) -> str:
    year, week, _ = (today or dt.date.today()).isocalendar()
    return f"localhost/orchgate-base:bookworm-{year}w{week:02d}"


def ensure_base_image(workdir: Path) -> tuple[str, bool]:
    """The cached base image's name, and whether it had to be built now."""
    name = base_image_name()
    if image_exists(name):
        return name, False
    rootfs = workdir / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
                    "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                   check=True, capture_output=True, timeout=BUILD_TIMEOUT)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    container = buildah("from", "scratch").stdout.strip()
    try:
        mount = Path(buildah("mount", container).stdout.strip())
        subprocess.run(["cp", "-a", f"{rootfs}/.", f"{mount}/"], check=True, timeout=300)
        buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                "/sbin:/bin", "--cmd", "/usr/bin/python3", container)
        buildah("commit", "--quiet", container, name)
    finally:
        buildah("rm", container, check=False)
        shutil.rmtree(rootfs, ignore_errors=True)
    return name, True


@dataclass(frozen=True)
class Build:
    image: str
    seconds: float
    size: str


def build_image(base: str) -> Build:
    """`buildah bud` the repository's Dockerfile on `base`; the host's CA bundle is mounted
    for pip's downloads exactly as a user behind a TLS-intercepting proxy would."""
    orphans_before = dangling_images()
    started = time.monotonic()
    buildah("bud", "--isolation", "chroot", "--format", "docker", "--layers",
            "--volume", f"{HOST_CA}:/run/host-ca.crt:ro",
            "--build-arg", "PIP_CERT=/run/host-ca.crt",
            "--build-arg", f"BASE_IMAGE={base}",
            "--tag", IMAGE, "--file", str(ROOT / "Dockerfile"), str(ROOT))
    seconds = time.monotonic() - started
    # The image this tag named before, and the build stage's result, are left untagged: each
    # a full copy of its filesystem in the vfs store (≈250 MB), one pair per build until the
    # disk is full. Removed here; untagged images that were there before are not ours.
    for image in dangling_images() - orphans_before:
        buildah("rmi", image, check=False)
    return Build(IMAGE, seconds, image_size(IMAGE))


def dangling_images() -> set[str]:
    """The ids of the store's untagged images that no other image builds on."""
    listed = buildah("images", "--filter", "dangling=true", "--quiet", "--no-trunc").stdout
    return set(listed.split())


def image_size(name: str) -> str:
    """The image's size as `buildah images` reports it (uncompressed layers, e.g. "246 MB")."""
    listed = json.loads(buildah("images", "--json", name).stdout)
    return str(listed[0]["size"])


def chown_tree(path: Path, uid: int) -> None:
    os.chown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, uid)
