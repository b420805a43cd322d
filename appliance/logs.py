"""The box's log: one handler on stderr, plain text or JSON lines, third-party chatter kept out.

``setup_logging(level, json=False)`` is called once by the process that runs the box, before MediaPipe or
aiortc are imported. What it keeps out unless ``chatter=True``:

- Python loggers of libraries that narrate every connection (aiortc, aioice, aiohttp's access log, ...):
  they are set to WARNING;
- MediaPipe's native (C++) logs. LiteRT and absl write them straight to file descriptor 2 and honour no
  environment variable (GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL and GOOGLE_STDERRTHRESHOLD were tried), so
  descriptor 2 becomes a pipe read by a thread that turns each line into a record of the ``native`` logger:
  INFO and WARNING lines at DEBUG, ERROR lines at WARNING, FATAL lines at ERROR. Python's own ``sys.stderr``
  (tracebacks, the handler) keeps the original stderr.
"""

from __future__ import annotations

import json as _json
import logging
import os
import re
import sys
import threading
import time
from typing import Any, Literal, TextIO

from pydantic import Field

from common.settings import Section

CHATTY = (
    "aiortc",
    "aioice",
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.web",
    "av",
    "PIL",
    "matplotlib",
    "asyncio",
    "aiomqtt",
    "urllib3",
)

Level = Literal["debug", "info", "warning", "error"]


class LogConfig(Section):
    level: Level = Field("info", title="Log level")
    format: Literal["text", "json"] = Field(
        "text", title="Log format", description="json: one JSON object per line (for log shippers)."
    )
    chatter: bool = Field(
        False,
        title="Show libraries' logs",
        description="aiortc, aioice and MediaPipe's native logs, normally kept out.",
    )


# attributes every LogRecord has; anything else came from ``extra=`` and goes into the JSON line
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, ``exc`` when there
    is an exception, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        for k, v in vars(record).items():
            if k not in _STANDARD and k not in out:
                out[k] = v
        return _json.dumps(out, default=str, ensure_ascii=False)


_NATIVE_LEVEL = [
    (re.compile(r"^(F\d{4} |FATAL|F0000)"), logging.ERROR),
    (re.compile(r"^(E\d{4} |ERROR)"), logging.WARNING),
]
_HANDLER_NAME = "roombox"
_native_lock = threading.Lock()
_native_stderr: TextIO | None = None
_native_chatter = False  # whether native INFO/WARNING lines show (at INFO) or not (DEBUG); see setup_logging


def _native_level(line: str) -> int:
    for pattern, level in _NATIVE_LEVEL:
        if pattern.match(line):
            return level
    return logging.INFO if _native_chatter else logging.DEBUG


def capture_native_stderr(chatter: bool = False) -> TextIO:
    """Route file descriptor 2 into the ``native`` logger (once per process); returns a text stream on the
    original stderr, which also becomes ``sys.stderr``."""
    global _native_stderr, _native_chatter
    _native_chatter = chatter
    with _native_lock:
        if _native_stderr is not None:
            return _native_stderr
        sys.stderr.flush()
        original = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        stream = open(original, "w", buffering=1, encoding="utf-8", errors="replace")
        sys.stderr = stream
        _native_stderr = stream
    log = logging.getLogger("native")

    def pump() -> None:
        with open(read_fd, encoding="utf-8", errors="replace") as pipe:
            for raw in pipe:
                line = raw.rstrip("\n")
                if line:
                    log.log(_native_level(line), "%s", line)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()
    return stream


class ClientFaults(logging.Filter):
    """aiohttp logs a request it cannot parse (no Host, two Host headers, a NUL in a header) or a client
    that left mid-body at ERROR with a traceback; anyone on the network can cause them. They become one
    WARNING line saying what the client did wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "aiohttp.server" or not record.exc_info:
            return True
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1]
        if isinstance(error, HttpProcessingError | ConnectionResetError):
            what = " ".join(str(getattr(error, "message", "") or error).split()) or type(error).__name__
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {what}"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def setup_logging(
    level: str | int = "info",
    json: bool = False,
    chatter: bool = False,
    native: bool = True,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger for the box; returns its handler. Safe to call again (it replaces the
    handler it added before).

    ``level``: "debug" | "info" | "warning" | "error" (or a ``logging`` level). ``json``: JSON lines.
    ``chatter``: let the libraries' INFO logs through. ``native``: capture MediaPipe's C++ logs on fd 2
    (see the module's doc). Under systemd (``$JOURNAL_STREAM``) text lines carry no time: the journal adds it.
    """
    lvl = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(lvl, int):
        raise ValueError(f"[log.level] unknown log level {level!r}: use debug, info, warning or error")
    if native and stream is None:
        stream = capture_native_stderr(chatter)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(ClientFaults())
    if json:
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        if (
            h.get_name() == _HANDLER_NAME
            or isinstance(h, logging.StreamHandler)
            and h.stream in (sys.stderr, sys.__stderr__)
        ):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if chatter else max(logging.WARNING, lvl))
    logging.captureWarnings(True)
    return handler


def setup_from_config(cfg: LogConfig) -> logging.Handler:
    """``setup_logging`` from a ``[log]`` section."""
    return setup_logging(cfg.level, json=cfg.format == "json", chatter=cfg.chatter)
