"""Prints, at the end of each fuzz module, how many examples each of its tests ran (``pytest -s``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.fuzzkit import report


@pytest.fixture(scope="module", autouse=True)
def _report_runs(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    line = report(request.module.__name__)
    if line is not None:
        print(line)
