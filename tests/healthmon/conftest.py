from __future__ import annotations

from collections.abc import Iterator

import pytest

from healthmon.shared_grouper import shared_grouper


@pytest.fixture(autouse=True)
def _fresh_grouper() -> Iterator[None]:
    # Each test's database starts empty: so does what this process learned from it.
    shared_grouper.forget()
    yield
    shared_grouper.forget()
