"""Developer sessions: ``nox -s tests | lint | typecheck | docs | bench | demo``.

Every session runs in the interpreter of ``.venv`` (made by ``tools/setup-host.sh``) so that a
fresh machine needs exactly two commands; nox only orchestrates.
"""

from __future__ import annotations

import os
import sys

import nox

# Run the tools of the interpreter that runs nox (.venv/bin), whatever PATH says.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "none"

FIXTURE_CACHE = os.environ.get("LIVEOS_FIXTURE_CACHE", "/var/cache/liveos-fixtures")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + ruff format --check."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library, tests and benchmarks."""
    session.run("mypy", "--strict")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, QEMU boots included (root needed; fixture images cached in FIXTURE_CACHE)."""
    session.notify("lint")
    session.notify("typecheck")
    session.notify("docs")
    # One worker per core, whole files per worker (module fixtures build their media once).
    workers = ["-n", str(min(os.cpu_count() or 1, 2)), "--dist", "loadfile"]
    session.run(
        "pytest",
        "-v",
        "--durations=30",
        *workers,
        *session.posargs,
        env={"LIVEOS_FIXTURE_CACHE": FIXTURE_CACHE},
    )


@nox.session
def docs(session: nox.Session) -> None:
    """The docs site (mkdocs.yml) into site/, every warning an error (broken links, bad references)."""
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # material's banner about its successor, not a problem
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the standard tools; results go to benchmarks/results/ and docs/performance.md."""
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Build the demo disk image (Debian 12, azl layout) and turn it into a bootable Live ISO."""
    out = os.path.abspath("out")
    image = session.run(
        "python", "-m", "tests.fixtures.builder", "--layout", "azl", "--format", "qcow2", silent=True
    )
    assert isinstance(image, str)
    image_path = image.strip().splitlines()[-1]
    session.run("liveos", "iso", image_path, "-o", f"{out}/demo-live.iso", "--label", "LIVEOS_DEMO")
    session.log(f"Live ISO: {out}/demo-live.iso")
    session.log(f"Boot it: liveos boot {out}/demo-live.iso   (QEMU + OVMF, serial console on stdout)")
