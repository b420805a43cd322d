"""Text from outside the box (a server's error page, a reason in a reply) made safe to log and show."""

from __future__ import annotations


def excerpt(text: str, limit: int = 160) -> str:
    """``text`` on one line, at most ``limit`` characters (then ``...``), its control characters escaped
    (``\\x1b``): a far end's answer goes into the journal, the panel and health, where a terminal's escape
    sequence or a bare carriage return would hide or rewrite what is around it."""
    text = " ".join(text.split())
    cut = len(text) > limit
    text = "".join(c if c.isprintable() else _escape(c) for c in text[:limit])
    return text + "..." if cut else text


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
