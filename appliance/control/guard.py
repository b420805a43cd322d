"""What every request to the box goes through: the Host check, the Origin check, credentials, JSON bodies.

:class:`Control` is the one object the web server needs for all of it: the credentials (:class:`Auth`),
the access limits (the config's ``[access]``, read at each request so that changes apply live), and the
config store behind the remote configuration API (optional).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from aiohttp import web

from appliance.config import AccessConfig, Config
from appliance.control.auth import Auth, Principal, allows
from appliance.control.store import ConfigStore, OnConfig
from common.paths import home_dir
from common.strict_json import loads_strict

log = logging.getLogger(__name__)

SESSION_COOKIE = "roombox_session"
CREDENTIALS_NEEDED = "credentials needed: a bearer token (roombox token create) or a panel session"
TOKEN_NOT_VALID = "this token is not valid (unknown, revoked, expired, or not for this address)"


_ERRORS: dict[int, type[web.HTTPError]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    412: web.HTTPPreconditionFailed,
    415: web.HTTPUnsupportedMediaType,
    421: web.HTTPMisdirectedRequest,
    422: web.HTTPUnprocessableEntity,
    429: web.HTTPTooManyRequests,
    500: web.HTTPInternalServerError,
    507: web.HTTPInsufficientStorage,
}


def fail(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> NoReturn:
    """Stop the request with a JSON error ``{"error": message, ...}`` (a 4xx status from ``_ERRORS``)."""
    cls = _ERRORS[status]
    text = json.dumps({"error": message, **extra})
    raise cls(text=text, content_type="application/json", headers=headers)


def split_host(host: str) -> tuple[str, str | None]:
    """``"Name:8080"`` -> ``("name", "8080")``; ``"[::1]:80"`` -> ``("::1", "80")``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[1:end] if end > 0 else host[1:], host[end + 1 :] if end > 0 else ""
        return name, rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name.rstrip("."), port
    return host.rstrip("."), None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Control:
    """Credentials, access limits and (optionally) the config store, for one web application.

    ``Control(auth)`` guards a server with fixed default limits; ``Control(auth, store=store,
    on_config=fn)`` also serves the configuration API, with limits from ``store.current.access``.
    """

    def __init__(
        self,
        auth: Auth,
        access: AccessConfig | None = None,
        store: ConfigStore | None = None,
        on_config: OnConfig | None = None,
    ) -> None:
        self.auth = auth
        self._access = access if access is not None else AccessConfig()
        self.store = store
        self.on_config = on_config
        self.started = time.monotonic()
        hostname = socket.gethostname().lower().rstrip(".")
        self._own_names = {"localhost", hostname, f"{hostname}.local"}

    @classmethod
    def for_box(
        cls, cfg: Config, on_config: OnConfig | None = None, config_path: Path | None = None, home: Path | None = None
    ) -> Control:
        """The live box's control: tokens and the PIN under ``home`` (default ``$ROOMBOX_HOME``), the running
        ``cfg`` behind ``/api/config``, written to ``config_path`` (default ``home/config.toml``), its
        revisions in ``home/config-revisions/``. ``on_config(new_cfg)`` applies a change live and returns the
        keys (or section names) that need a restart."""
        home = home_dir() if home is None else home
        store = ConfigStore(
            config_path if config_path is not None else home / "config.toml", home / "config-revisions", cfg
        )
        return cls(Auth.at(home), store=store, on_config=on_config)

    @property
    def access(self) -> AccessConfig:
        return self.store.current.access if self.store is not None else self._access

    @property
    def config(self) -> Config | None:
        return self.store.current if self.store is not None else None

    # -- Host and Origin ---------------------------------------------------------------------------
    def host_allowed(self, host: str | None) -> bool:
        """IP literals, localhost, this machine's names and the configured ones; not any other name (a name
        that an attacker's DNS points at the box is how DNS rebinding reaches it)."""
        if not host:
            return False
        name, _ = split_host(host)
        return _is_ip(name) or name in self._own_names or name in {h.lower() for h in self.access.allowed_hosts}

    def origin_allowed(self, origin: str, request: web.Request) -> bool:
        """The page's own origin (same host and port as the request's Host), or a configured one."""
        if origin in self.access.allowed_origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            return False
        default = "443" if parts.scheme == "https" else "80"
        o_name, o_port = split_host(parts.netloc)
        h_name, h_port = split_host(request.headers.get("Host", ""))
        return o_name == h_name and (o_port or default) == (h_port or default)

    # -- who is asking -----------------------------------------------------------------------------
    def principal(self, request: web.Request, cookie_ok: bool = True) -> Principal | None:
        """The credentials on a request: a bearer token, or else (when ``cookie_ok``) the session cookie."""
        header = request.headers.get("Authorization", "")
        if header:
            kind, _, value = header.partition(" ")
            if kind.lower() != "bearer":
                return None
            return self.auth.from_bearer(value.strip(), request.remote)
        sid = request.cookies.get(SESSION_COOKIE)
        if sid and cookie_ok:
            return self.auth.from_session(sid, request.remote)
        return None

    def require(self, request: web.Request, scope: str, changes_state: bool = False) -> Principal:
        """The caller's principal, if it has ``scope``; else a 401/403 JSON error.

        ``changes_state``: the request changes something or starts work (an offer, a socket, a write). A
        browser always sends Origin on such requests: one that is present must be allowed, and a session
        cookie is only honoured with an allowed Origin (a cross-site form or script cannot ride on it).
        """
        cookie_ok = True
        if changes_state:
            origin = request.headers.get("Origin")
            if origin is not None and not self.origin_allowed(origin, request):
                log.warning("refused %s %s from %s: origin %r", request.method, request.path, request.remote, origin)
                fail(403, f"origin {origin!r} is not allowed here")
            cookie_ok = origin is not None
        who = self.principal(request, cookie_ok)
        if who is None:
            header = request.headers.get("Authorization", "")
            if not header:
                message = CREDENTIALS_NEEDED
            elif header.partition(" ")[0].lower() != "bearer":
                message = "only bearer tokens are taken here (Authorization: Bearer rbx_...)"
            else:  # a token was sent: saying that none was would mislead
                message = TOKEN_NOT_VALID
            fail(401, message, headers={"WWW-Authenticate": 'Bearer realm="roombox"'})
        if not allows(who.scope, scope):
            fail(403, f"this needs the {scope} scope; {who.who} has {who.scope}")
        return who

    def still_valid(self, who: Principal, remote: str | None) -> Principal | None:
        """The principal again, as it stands now (a token revoked or a session ended gives None)."""
        if who.session_id is not None:
            return self.auth.from_session(who.session_id, remote)
        if who.token_id is not None:
            rec = next((r for r in self.auth.tokens.records() if r.id == who.token_id), None)
            if rec is None or rec.expires is not None and time.time() >= rec.expires:
                return None
        return who

    # -- middlewares -------------------------------------------------------------------------------
    def middlewares(self) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
        @web.middleware
        async def guard(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            host = request.headers.get("Host")  # not request.host: without a Host it makes one up
            if not self.host_allowed(host):
                log.warning("refused %s %s from %s: Host %r", request.method, request.path, request.remote, host)
                fail(421, f"this box does not answer to the name {host!r}")
            try:
                try:
                    response = await handler(request)
                except RecursionError:
                    fail(400, "the request is nested too deeply")
                except web.HTTPException:
                    raise
                except Exception as e:  # a fault of the box's: logged whole, answered in the API's form
                    if not request.path.startswith("/api/"):
                        raise
                    log.exception("%s %s failed", request.method, request.path)
                    fail(500, f"the box failed to answer: {type(e).__name__}: {e}")
            except web.HTTPException as e:
                if e.status >= 400 and request.path.startswith("/api/") and e.content_type != "application/json":
                    # aiohttp's own refusals (413 over the body limit, 405, 404) in the API's form
                    message = e.text or e.reason
                    if e.status == 413:
                        message = f"the body is larger than [access] max_body_kb allows: {message}"
                    e.content_type = "application/json"
                    e.text = json.dumps({"error": message})
                _harden(request, e)
                raise
            if not response.prepared:
                _harden(request, response)
            return response

        return [guard]


def _harden(request: web.Request, response: web.StreamResponse | web.HTTPException) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/") or request.path == "/offer":
        h.setdefault("Cache-Control", "no-store")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body: 415 unless it is ``application/json``, 413 when over the size limit, 400
    when it is not JSON (NaN and infinities included) or nested too deeply."""
    if request.content_type != "application/json":
        fail(415, f"expected Content-Type application/json, got {request.content_type!r}")
    body = await request.read()
    return parse_json(body)


def parse_json(body: bytes | str) -> Any:
    try:
        return loads_strict(body)
    except RecursionError:
        fail(400, "the JSON is nested too deeply")
    except (ValueError, UnicodeDecodeError) as e:
        fail(400, f"not JSON: {e}")


_default: Control | None = None


def default_control() -> Control:
    """The process's control when a server is made without one: tokens and the PIN under ``$ROOMBOX_HOME``,
    the default access limits, no configuration API."""
    global _default
    if _default is None:
        _default = Control(Auth.at())
    return _default
