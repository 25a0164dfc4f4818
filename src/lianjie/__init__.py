"""Lianjie: an open-source financial connector."""

__version__ = "0.1.0"
