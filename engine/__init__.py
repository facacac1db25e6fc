"""Berth engine: a daemonless container engine. Imports no Django."""

__version__ = "0.1.0"
