"""The package version, in a module of its own so that any module can read it without importing the
package front (``flowvla/__init__.py`` imports the whole library). Hatch reads it from here."""

__version__ = "0.1.0.dev0"
