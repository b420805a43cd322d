"""Roombox: the meeting-room box application (perception, director, streaming, control, config)."""

__version__ = "0.1.0"
