"""The image tests run last: they take minutes, and every faster signal should come first."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    image = [i for i in items if HERE in Path(str(i.fspath)).resolve().parents]
    for item in image:
        item.add_marker(pytest.mark.image)
    items[:] = [i for i in items if i not in image] + image
