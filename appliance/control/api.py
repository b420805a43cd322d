"""The remote API: the configuration (read, write, history, restore), status, panel sessions, and its
OpenAPI document at ``/api/openapi.json`` (schemas generated from the pydantic ``Config`` model).

Scopes: ``read`` for ``/api/state`` and ``/api/status``; ``admin`` for everything under ``/api/config``
(it may hold secrets). ``/api/openapi.json`` and ``/healthz`` are open.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from appliance.config import Config
from appliance.control.auth import SCOPES, Principal
from appliance.control.guard import SESSION_COOKIE, Control, fail, parse_json, read_json
from appliance.control.store import (
    EMPTY_CONFIG,
    ConfigRejected,
    ConfigStore,
    Revision,
    RevisionDamaged,
    StoreError,
    validate,
)
from common.settings import TomlError, parse_toml

log = logging.getLogger(__name__)

CONTROL = web.AppKey("roombox_control", Control)
LiveStatus = Callable[[], dict[str, Any]]
_LIVE = web.AppKey("roombox_live_status", object)

VERSION = "0.1.0"


def _control(request: web.Request) -> Control:
    return request.app[CONTROL]


def _store(request: web.Request) -> ConfigStore:
    store = _control(request).store
    if store is None:
        fail(404, "this box does not serve its configuration")
    return store


# ---------- sessions ----------


async def _session_post(request: web.Request) -> web.Response:
    """Sign a panel in: ``{"token": ...}`` (e.g. the kiosk's) or ``{"pin": ...}`` (admin rights for a while)."""
    c = _control(request)
    origin = request.headers.get("Origin")
    if origin is not None and not c.origin_allowed(origin, request):
        fail(403, f"origin {origin!r} is not allowed here")
    body = await read_json(request)
    if (
        not isinstance(body, dict)
        or len(body) != 1
        or not isinstance(next(iter(body.values())), str)
        or next(iter(body)) not in ("token", "pin")
    ):
        fail(400, 'expected {"token": "..."} or {"pin": "..."}')
    access = c.access
    remote = request.remote or "?"
    client = client_key(remote)
    if "token" in body:
        rec = c.auth.tokens.check(body["token"], request.remote)
        if rec is None:
            log.warning("panel sign-in with a bad token from %s", remote)
            fail(401, "this token is not valid (unknown, revoked, expired, or not for this address)")
        ttl = access.session_hours * 3600
        sid = c.auth.session_for_token(rec, ttl)
        who = c.auth.from_session(sid, request.remote)
    else:
        wait = c.auth.throttle.wait_s(client, access.pin_free_tries, access.pin_max_backoff_s)
        if wait > 0:
            log.warning("PIN try from %s refused: wait %.0f s", remote, wait)
            fail(
                429,
                f"too many wrong PINs: try again in {wait:.0f} s",
                headers={"Retry-After": str(int(wait) + 1)},
                retry_after_s=round(wait, 1),
            )
        from appliance.control.auth import StateDamaged

        try:  # a damaged PIN file is not a wrong PIN: answered as "not set", and the back-off is not counted
            if not c.auth.pin.is_set():
                fail(409, "no admin PIN is set on this box (roombox pin set)")
            ok = await asyncio.to_thread(c.auth.pin.verify, body["pin"])
        except StateDamaged:
            fail(409, "the admin PIN's file on this box is damaged: roombox pin set makes a new PIN")
        if not ok:
            n = c.auth.throttle.failed(client)
            log.warning("wrong PIN from %s (%d in a row)", remote, n)
            # the wait this failure starts, said now: a panel need not send its next try only to learn it
            wait = c.auth.throttle.wait_s(client, access.pin_free_tries, access.pin_max_backoff_s)
            fail(401, "wrong PIN", failures=n, retry_after_s=round(wait, 1))
        c.auth.throttle.succeeded(client)
        existing = request.cookies.get(SESSION_COOKIE)
        if existing is not None and (origin is None or c.auth.from_session(existing, request.remote) is None):
            existing = None
        sid = c.auth.session_for_pin(request.remote, existing, access.pin_minutes * 60)
        who = c.auth.from_session(sid, request.remote)
        log.info("admin PIN accepted from %s", remote)
        ttl = access.session_hours * 3600 if existing else access.pin_minutes * 60
    assert who is not None
    response = web.json_response(_who(who))
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(ttl), httponly=True, samesite="Strict", path="/")
    return response


def client_key(remote: str) -> str:
    """Whom the PIN back-off counts: the IPv4 address, or the /64 of an IPv6 one (a host picks any address in
    its /64 at will)."""
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped) if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else str(ip)


def _who(p: Principal) -> dict[str, Any]:
    return {"who": p.who, "scope": p.scope, "via": p.via}


async def _session_get(request: web.Request) -> web.Response:
    return web.json_response(_who(_control(request).require(request, "read")))


async def _session_delete(request: web.Request) -> web.Response:
    c = _control(request)
    who = c.require(request, "read", changes_state=True)
    if who.session_id is not None:
        c.auth.sessions.drop(who.session_id)
    response = web.json_response({"signed_out": who.session_id is not None})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# ---------- config ----------


def _change_reply(rev: Revision) -> dict[str, Any]:
    live = [k for k in rev.changed if k not in rev.restart]
    return {"revision": rev.id, "changed": rev.changed, "applied_live": live, "restart_required": rev.restart}


def _etag(rid: int) -> str:
    return f'"{rid}"'


async def _config_get(request: web.Request) -> web.Response:
    _control(request).require(request, "admin")
    store = _store(request)
    return web.json_response(store.current.model_dump(mode="json"), headers={"ETag": _etag(store.latest_id())})


def _check_if_match(request: web.Request, store: ConfigStore) -> None:
    """412 unless ``If-Match`` (when sent) is ``*`` or lists the latest revision's ETag (RFC 9110: a list of
    tags, compared strongly, so a weak ``W/"3"`` never matches)."""
    wanted = request.headers.getall("If-Match", [])
    if not wanted:
        return
    tags = [t.strip() for line in wanted for t in line.split(",")]
    if "*" in tags or _etag(store.latest_id()) in tags:
        return
    fail(
        412,
        f"the config changed since revision {', '.join(tags)}: it is now at {store.latest_id()}",
        revision=store.latest_id(),
    )


async def _config_put(request: web.Request) -> web.Response:
    c = _control(request)
    who = c.require(request, "admin", changes_state=True)
    store = _store(request)
    if request.content_type == "application/toml":
        try:
            doc: Any = parse_toml((await request.read()).decode("utf-8"))
        except (TomlError, UnicodeDecodeError) as e:
            fail(400, f"not valid TOML: {e}")
    elif request.content_type == "application/json":
        doc = parse_json(await request.read())
    else:
        fail(415, f"expected Content-Type application/json or application/toml, got {request.content_type!r}")
    if not isinstance(doc, dict):
        fail(
            422,
            "config refused: [(top level)] the config is an object (the whole document)",
            errors=[{"key": "(top level)", "reason": "not an object"}],
        )
    if not doc:  # an empty file sent by mistake would put every key back to its default
        fail(422, f"config refused: {EMPTY_CONFIG}", errors=[{"key": "(top level)", "reason": EMPTY_CONFIG}])
    try:
        cfg = validate(doc)
    except ConfigRejected as e:
        log.info("config from %s refused: %s", who.who, e)
        fail(422, f"config refused: {e}", errors=e.errors)
    _check_if_match(request, store)
    if cfg == store.current:
        return web.json_response(
            {"revision": store.latest_id(), "changed": [], "applied_live": [], "restart_required": []},
            headers={"ETag": _etag(store.latest_id())},
        )
    try:
        rev = store.write(cfg, who.who, c.on_config)
    except ConfigRejected as e:
        log.info("config from %s refused: %s", who.who, e)
        fail(422, f"config refused: {e}", errors=e.errors)
    except StoreError as e:
        log.warning("config from %s: %s", who.who, e)
        fail(507, str(e), revision=store.latest_id())
    log.info("config revision %d by %s: %s", rev.id, who.who, ", ".join(rev.changed))
    return web.json_response(_change_reply(rev), headers={"ETag": _etag(rev.id)})


async def _revisions(request: web.Request) -> web.Response:
    _control(request).require(request, "admin")
    # 500 revision files take about 50 ms to read: off the event loop, which carries the room's video (a file
    # pruned meanwhile is skipped, as a missing one is)
    revisions = await asyncio.to_thread(_store(request).revisions)
    return web.json_response({"revisions": [r.to_json() for r in revisions]})


def _revision_id(request: web.Request) -> int:
    text = request.match_info["rid"]
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        fail(404, f"no revision {text!r}")
    return int(text)


async def _revision(request: web.Request) -> web.Response:
    _control(request).require(request, "admin")
    store, rid = _store(request), _revision_id(request)
    try:
        return web.json_response({**store.revision(rid).to_json(), "config": store.document(rid)})
    except KeyError:
        fail(404, f"no revision {rid}")
    except RevisionDamaged as e:
        fail(409, f"revision {rid} is damaged: {e}")


async def _restore(request: web.Request) -> web.Response:
    c = _control(request)
    who = c.require(request, "admin", changes_state=True)
    store, rid = _store(request), _revision_id(request)
    _check_if_match(request, store)
    try:
        rev = store.restore(rid, who.who, c.on_config)
    except KeyError:
        fail(404, f"no revision {rid}")
    except RevisionDamaged as e:
        fail(409, f"revision {rid} is damaged, nothing restored: {e}")
    except ConfigRejected as e:
        fail(422, f"revision {rid} no longer validates: {e}", errors=e.errors)
    except StoreError as e:
        log.warning("restoring revision %d for %s: %s", rid, who.who, e)
        fail(507, str(e), revision=store.latest_id())
    if rev.changed:
        log.info("config revision %d by %s: restored %d", rev.id, who.who, rid)
    return web.json_response(_change_reply(rev), headers={"ETag": _etag(rev.id)})


# ---------- status, the document ----------


async def _status(request: web.Request) -> web.Response:
    c = _control(request)
    c.require(request, "read")
    live: Any = request.app[_LIVE]
    out: dict[str, Any] = {
        "version": VERSION,
        "uptime_s": round(time.monotonic() - c.started, 1),
        "config_revision": c.store.latest_id() if c.store else None,
        "restart_required": sorted(c.store.pending_restart) if c.store else [],
        **live(),
    }
    return web.json_response(out)


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def add_routes(app: web.Application, control: Control, live: LiveStatus) -> None:
    """The API's routes on ``app`` (``live()`` gives the stream's figures for ``/api/status``)."""
    app[CONTROL] = control
    app[_LIVE] = live
    app.router.add_get("/api/openapi.json", _openapi)
    app.router.add_get("/api/status", _status)
    app.router.add_post("/api/session", _session_post)
    app.router.add_get("/api/session", _session_get)
    app.router.add_delete("/api/session", _session_delete)
    app.router.add_get("/api/config", _config_get)
    app.router.add_put("/api/config", _config_put)
    app.router.add_get("/api/config/revisions", _revisions)
    app.router.add_get("/api/config/revisions/{rid}", _revision)
    app.router.add_post("/api/config/revisions/{rid}/restore", _restore)


# ---------- OpenAPI ----------

_document: dict[str, Any] | None = None


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, scope: str | None, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **more}
    if scope is None:
        op["security"] = []
    else:
        op["description"] = (op.get("description", "") + f" Needs the `{scope}` scope.").strip()
        op["responses"] = {
            **responses,
            "401": _err("no valid credentials"),
            "403": _err(f"not {scope}, or a refused Origin"),
        }
    return op


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the box's HTTP API; the config's schema comes from the pydantic model."""
    global _document
    if _document is not None:
        return _document
    schema = Config.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(schema.pop("$defs", {}))
    components["Config"] = schema
    obj = {"type": "object"}
    components["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
    components["Change"] = {
        "type": "object",
        "properties": {
            "revision": {"type": "integer"},
            "changed": {"type": "array", "items": {"type": "string"}},
            "applied_live": {"type": "array", "items": {"type": "string"}},
            "restart_required": {"type": "array", "items": {"type": "string"}},
        },
    }
    components["Revision"] = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "who": {"type": "string"},
            "when": {"type": "string"},
            "changed": {"type": "array", "items": {"type": "string"}},
            "restart": {"type": "array", "items": {"type": "string"}},
            "note": {"type": "string"},
        },
    }
    components["Who"] = {
        "type": "object",
        "properties": {
            "who": {"type": "string"},
            "scope": {"enum": list(SCOPES)},
            "via": {"enum": ["token", "session"]},
        },
    }
    config_ref = {"$ref": "#/components/schemas/Config"}
    rid = [{"name": "rid", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}]
    if_match = [
        {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "the ETag of the revision this change is based on (refused with 412 if stale)",
        }
    ]
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Liveness", None, {"200": _ok("alive", obj)})},
        "/api/openapi.json": {"get": _op("This document", None, {"200": _ok("the document", obj)})},
        "/api/state": {"get": _op("The box's latest events and stream counters", "read", {"200": _ok("state", obj)})},
        "/api/status": {
            "get": _op(
                "Version, uptime, config revision, keys waiting for a restart, viewers",
                "read",
                {"200": _ok("status", obj)},
            )
        },
        "/api/session": {
            "get": _op(
                "Who this session or token is", "read", {"200": _ok("who", {"$ref": "#/components/schemas/Who"})}
            ),
            "post": _op(
                "Sign a panel in (sets an HttpOnly, SameSite=Strict cookie)",
                None,
                {
                    "200": _ok("signed in", {"$ref": "#/components/schemas/Who"}),
                    "400": _err("not a sign-in request"),
                    "401": _err("wrong token or PIN (a wrong PIN's retry_after_s: the wait it starts, 0 for none)"),
                    "403": _err("refused Origin"),
                    "409": _err("no PIN set"),
                    "415": _err("not JSON"),
                    "429": _err("too many wrong PINs: wait (Retry-After)"),
                },
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["pin"],
                                        "additionalProperties": False,
                                        "properties": {"pin": {"type": "string"}},
                                    },
                                    {
                                        "type": "object",
                                        "required": ["token"],
                                        "additionalProperties": False,
                                        "properties": {"token": {"type": "string"}},
                                    },
                                ]
                            }
                        }
                    },
                },
            ),
            "delete": _op("Sign out", "read", {"200": _ok("signed out", obj)}),
        },
        "/api/config": {
            "get": _op(
                "The whole config document in force (ETag: its revision)",
                "admin",
                {"200": _ok("the config", config_ref), "404": _err("no config API on this box")},
            ),
            "put": _op(
                "Replace the whole config: validated by the same model as the file, written atomically, "
                "recorded as a revision; says which keys apply live and which need a restart. Keys left out take "
                "their defaults; an empty document is refused (send one empty section to reset on purpose)",
                "admin",
                {
                    "200": _ok("the change", {"$ref": "#/components/schemas/Change"}),
                    "400": _err("not JSON/TOML"),
                    "404": _err("no config API on this box"),
                    "412": _err("stale If-Match"),
                    "413": _err("larger than [access] max_body_kb"),
                    "415": _err("neither JSON nor TOML"),
                    "422": _err("refused: each key and reason in `errors`"),
                },
                parameters=if_match,
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {"schema": config_ref},
                        "application/toml": {"schema": {"type": "string"}},
                    },
                },
            ),
        },
        "/api/config/revisions": {
            "get": _op(
                "Every change: who, when, what (newest first)",
                "admin",
                {
                    "200": _ok(
                        "the history",
                        {
                            "type": "object",
                            "properties": {
                                "revisions": {"type": "array", "items": {"$ref": "#/components/schemas/Revision"}}
                            },
                        },
                    ),
                    "404": _err("no config API on this box"),
                },
            )
        },
        "/api/config/revisions/{rid}": {
            "get": _op(
                "One revision with its whole document",
                "admin",
                {"200": _ok("the revision", obj), "404": _err("no such revision")},
                parameters=rid,
            )
        },
        "/api/config/revisions/{rid}/restore": {
            "post": _op(
                "Make an old revision's document the config again (as a new revision)",
                "admin",
                {
                    "200": _ok("the change", {"$ref": "#/components/schemas/Change"}),
                    "404": _err("no such revision"),
                    "412": _err("stale If-Match"),
                    "422": _err("it no longer validates"),
                },
                parameters=rid + if_match,
            )
        },
        "/offer": {
            "post": _op(
                "WebRTC: an SDP offer in, the answer out (one viewer of the framed room)",
                "read",
                {
                    "200": _ok(
                        "the answer",
                        {"type": "object", "properties": {"sdp": {"type": "string"}, "type": {"const": "answer"}}},
                    ),
                    "400": _err("not an offer the box takes (garbage, too many m-lines)"),
                    "415": _err("not JSON"),
                    "429": _err("the box has as many viewers as it serves"),
                },
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["sdp", "type"],
                                "properties": {"sdp": {"type": "string"}, "type": {"const": "offer"}},
                            }
                        }
                    },
                },
            )
        },
    }
    from appliance.control.calibration_api import calibration_paths  # it imports this module

    paths.update(calibration_paths(_op, _ok, _err))
    _document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Roombox",
            "version": VERSION,
            "description": "A meeting-room box's remote API. Credentials: `Authorization: Bearer <token>` "
            "(roombox token create --scope read|control|admin) or the panel's session cookie.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }
    return _document
