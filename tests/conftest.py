"""Shared pytest fixtures: real, bootable disk images built from Debian packages.

``fixture_image(layout, fmt)`` returns a cached :class:`~tests.fixtures.builder.FixtureImage`
(the first call in a fresh cache builds the rootfs with mmdebstrap: ~2 minutes). Tests that use
it are skipped, with a reason, only when not running as root.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import pytest

from tests.fixtures.builder import FixtureImage, build_image

FixtureImageFactory = Callable[..., FixtureImage]


@pytest.fixture(scope="session")
def fixture_image() -> FixtureImageFactory:
    """Factory ``fixture_image(layout="azl", fmt="qcow2") -> FixtureImage`` (cached per session)."""
    if os.geteuid() != 0:
        pytest.skip("building fixture images needs root (mmdebstrap --mode=root, losetup)")
    return functools.cache(build_image)
