"""Setting up the fleet's MQTT connection: the broker password, the TLS context, and the connection's quirks.

``read_password`` and ``tls_context`` raise :class:`FleetError` naming the ``[mqtt]`` key at fault, so that a
config whose link cannot start is refused before it is applied (``appliance.box``) and a box started with one
runs on without its fleet link (``appliance.app``). The rest works around what paho-mqtt and Python 3.11's
asyncio do on a failed handshake or a late cancellation, and names the usual cause of a cut handshake.
"""

from __future__ import annotations

import asyncio
import os
import ssl

from appliance.control.settings import MqttConfig
from common.errors import RoomboxError


class FleetError(RoomboxError, ValueError):
    """An [mqtt] section that cannot be used (a missing password file, ...)."""


def read_password(cfg: MqttConfig, environ: dict[str, str] | None = None) -> str | None:
    """The broker password: the first line of ``password_file``, else ``$<password_env>``, else None. With a
    ``username``, a ``password_env`` that is not set at all raises FleetError naming it (set to the empty
    text, it means a user name without a password)."""
    if cfg.password_file:
        try:
            with open(cfg.password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as e:
            raise FleetError(f"[mqtt.password_file] {cfg.password_file}: {e.strerror or e}") from None
    env = os.environ if environ is None else environ
    if cfg.username and cfg.password_env not in env:
        raise FleetError(
            f"[mqtt.password_env] the environment variable {cfg.password_env} is not set: it should hold the "
            f"password of the broker's user {cfg.username!r} (or name a password_file)"
        )
    return env.get(cfg.password_env) or None


def honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop. Python 3.11's ``asyncio.wait_for`` (which aiomqtt
    awaits in every publish) loses a cancellation that arrives as the publish completes; the task stays
    "cancelling" and would otherwise never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails. paho-mqtt wraps and handshakes a socket of
    its own and drops it unclosed when the broker's certificate is refused (a ResourceWarning and a
    descriptor left to the garbage collector on every attempt)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except (ssl.SSLError, OSError):
            self.close()
            raise


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context for ``cfg`` (None without TLS); a bad file raises FleetError naming the key."""
    if not cfg.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise FleetError(f"[mqtt.ca_file] {cfg.ca_file}: {e}") from None
    ctx.sslsocket_class = _ClosingSSLSocket
    if cfg.cert_file:
        try:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        except (OSError, ssl.SSLError) as e:
            raise FleetError(f"[mqtt.cert_file] {cfg.cert_file} / {cfg.key_file}: {e}") from None
    return ctx


def handshake_hint(cfg: MqttConfig, e: BaseException) -> str:
    """A hint for a connection that failed: the broker refused the credentials; no answer in time without TLS
    (often a TLS listener); a TLS connection cut during its handshake (most often a plain listener)."""
    cause = e.__cause__ or e.__context__
    text = f"{e} {cause or ''}".lower()
    if "not authorized" in text or "bad user name or password" in text:
        where = "password_file" if cfg.password_file else f"password_env (${cfg.password_env})"
        return (
            f" (the broker refused the credentials: check [mqtt] username ({cfg.username or 'none'}) and {where}; "
            "they are read again at each attempt)"
        )
    if not cfg.tls:
        if "timed out" in text:
            return " (no MQTT answer in time: if this port is a TLS listener, usually 8883, set tls = true)"
        return ""
    if isinstance(cause, ConnectionResetError | ssl.SSLEOFError) or any(
        s in text for s in ("reset by peer", "eof occurred", "wrong version number", "wrong_version_number")
    ):
        return f" (the TLS handshake failed: is {cfg.host}:{cfg.port} a TLS listener? with tls = true, usually 8883)"
    return ""
