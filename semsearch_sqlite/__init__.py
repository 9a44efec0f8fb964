"""semsearch-sqlite: semantic image search in one SQLite file."""

__version__ = "0.1.0"
