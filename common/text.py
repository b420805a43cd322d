"""Text from outside the box (a server's error page, a reason in a reply) made safe to log and show."""

from __future__ import annotations

import html
import re

_BLOCK = re.compile(r"<(head|script|style)\b", re.I)  # whose content is no text
_TAG = re.compile(r"<[^<>]*>")  # (no "<" inside: linear, however many "<" a page has)
PAGE_MAX = 65536  # characters of a page read for its words: an error page's are at its start


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


def page_excerpt(body: str, content_type: str = "", limit: int = 160) -> str:
    """A server's error body as :func:`excerpt` shows it, but an HTML page (by its type, or by how it starts)
    as its words: tags, head, scripts and styles dropped, entities read (a web server's 404 page shows as
    "Error response Error code: 404 Message: File not found.", not as its markup)."""
    start = body.lstrip()[:15].lower()
    if "html" in content_type.lower() or start.startswith(("<!doctype html", "<html")):
        body = html.unescape(_TAG.sub(" ", _without_blocks(body[:PAGE_MAX])))
    return excerpt(body, limit)


def _without_blocks(page: str) -> str:
    """``page`` without its head, scripts and styles (an unclosed one: the rest of the page), in one pass."""
    lower, out, i = page.lower(), [], 0
    while (m := _BLOCK.search(page, i)) is not None:
        out.append(page[i : m.start()])
        end = lower.find("</" + m.group(1).lower(), m.end())
        if end < 0:
            return " ".join(out)
        close = lower.find(">", end)
        i = len(page) if close < 0 else close + 1
        out.append(" ")
    out.append(page[i:])
    return "".join(out)
