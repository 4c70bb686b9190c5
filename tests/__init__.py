"""liveos test-suite (a package so `python3 -m tests.fixtures.builder` works from the repo root)."""
