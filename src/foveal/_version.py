"""The package version, in a module of its own so the library can read it without importing the
package facade (`foveal/__init__.py`, which re-exports the API and so sits above every layer)."""

__version__ = "0.1.0"  # the same as pyproject.toml's
