"""Shared pytest fixtures: real, bootable disk images built from Debian packages.

``fixture_image(layout, fmt)`` returns a cached :class:`~tests.fixtures.builder.FixtureImage`
(the first call in a fresh cache builds the rootfs with mmdebstrap: ~2 minutes). Tests that use
it are skipped, with a reason, only when not running as root.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable

import pytest

from tests.fixtures import trixie
from tests.fixtures.builder import FixtureImage, build_image

FixtureImageFactory = Callable[..., FixtureImage]

# A shell starts background jobs (CI runners, `cmd &`) with SIGINT ignored, and an ignored signal
# stays ignored across exec: the Ctrl-C tests' child processes would never see their SIGINT.
# A handled signal is reset to the default on exec, so install Python's own handler here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def private_artifact_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Builds in the tests use a cache of their own session (never the host's /var/cache/liveos):
    a test sees only what earlier tests of its worker stored. Subprocesses inherit it."""
    os.environ["LIVEOS_CACHE_DIR"] = str(tmp_path_factory.mktemp("liveos-cache"))


@pytest.fixture(scope="session")
def fixture_image() -> FixtureImageFactory:
    """Factory ``fixture_image(layout="azl", fmt="qcow2") -> FixtureImage`` (cached per session).

    Layout ``"trixie"`` is the Debian 13 image of :mod:`tests.fixtures.trixie` (Debian layout)."""
    if os.geteuid() != 0:
        pytest.skip("building fixture images needs root (mmdebstrap --mode=root, losetup)")

    def build(layout: str = "azl", fmt: str = "qcow2") -> FixtureImage:
        return trixie.build_image(fmt) if layout == trixie.LAYOUT else build_image(layout, fmt)

    return functools.cache(build)
