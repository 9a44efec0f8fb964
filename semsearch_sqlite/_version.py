"""The package version, in a leaf module so that any layer (storage writes it into each
database's ``semsearch_meta``) can read it without importing the top package."""

__version__ = "0.1.0"
