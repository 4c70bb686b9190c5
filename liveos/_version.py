"""The liveos release (one place; the package and the state file read it)."""

__version__ = "0.1.0"
