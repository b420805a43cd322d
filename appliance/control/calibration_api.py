"""The mic array's guided calibration over HTTP (:class:`appliance.calibrator.Calibrator`), for the panel's
settings (behind the admin PIN) and for IT doing it remotely:

- ``GET /api/calibration`` (``read``): the calibration saved (when, rotation, scale, points, gain), the capture
  under way, the points captured, the fit they give, the prompts;
- ``POST /api/calibration/capture`` ``{"point": "left" | "right" | "centre"}`` (``admin``): listens for
  ``[calibration] capture_s`` while the person at that end of the table talks; answers when it is done with
  the point, or 422 and the reason (too few speech blocks, the spread too wide, two voices, no face); 409
  while another capture runs;
- ``POST /api/calibration/save`` (``admin``): writes the fit as ``[calibration] points`` and the gain the
  points' speech levels call for as ``gain_db`` (a config revision, applied live); 422 and the reason when it
  is not plausible (the saved calibration stays);
- ``POST /api/calibration/discard`` (``admin``): forgets the points captured;
- ``DELETE /api/calibration`` (``admin``): removes the saved calibration.

A box without a live calibrator (no mic array running) answers 404.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.calibration import CalibrationRefused
from appliance.calibrator import CalibrationBusy, Calibrator
from appliance.control.api import CONTROL
from appliance.control.guard import fail, read_json
from appliance.control.store import ConfigRejected, Revision

CALIBRATOR = web.AppKey("roombox_calibrator", object)


def _calibrator(request: web.Request) -> Calibrator:
    cal = request.app[CALIBRATOR]
    if not isinstance(cal, Calibrator):
        fail(404, "this box has no live mic array to calibrate")
    return cal


def _state(cal: Calibrator, **more: Any) -> dict[str, Any]:
    return {**cal.state().to_json(), "prompts": cal.prompts(), **more}


async def _get(request: web.Request) -> web.Response:
    request.app[CONTROL].require(request, "read")
    return web.json_response(_state(_calibrator(request)))


async def _capture(request: web.Request) -> web.Response:
    request.app[CONTROL].require(request, "admin", changes_state=True)
    cal = _calibrator(request)
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"point"} or not isinstance(body["point"], str):
        fail(400, 'expected {"point": "left" | "right" | "centre"}')
    try:
        point = await cal.capture(body["point"])
    except CalibrationBusy as e:
        fail(409, str(e))
    except CalibrationRefused as e:
        fail(422, str(e), calibration=cal.state().to_json())
    return web.json_response(_state(cal, point=point.to_json()))


def _revision(rev: Revision | None) -> int | None:
    return None if rev is None else rev.id


async def _save(request: web.Request) -> web.Response:
    who = request.app[CONTROL].require(request, "admin", changes_state=True)
    cal = _calibrator(request)
    if cal.capturing is not None:
        fail(409, f"capturing the {cal.capturing} point: save when it is done")
    try:
        rev = cal.save(who.who)
    except (CalibrationRefused, ConfigRejected) as e:
        fail(422, str(e), calibration=cal.state().to_json())
    return web.json_response(_state(cal, revision=_revision(rev)))


async def _discard(request: web.Request) -> web.Response:
    request.app[CONTROL].require(request, "admin", changes_state=True)
    cal = _calibrator(request)
    if cal.capturing is not None:  # the capture would add its point after the discard
        fail(409, f"capturing the {cal.capturing} point: discard when it is done")
    cal.discard()
    return web.json_response(_state(cal))


async def _delete(request: web.Request) -> web.Response:
    who = request.app[CONTROL].require(request, "admin", changes_state=True)
    cal = _calibrator(request)
    rev = cal.forget(who.who)
    return web.json_response(_state(cal, revision=_revision(rev)))


def add_calibration_routes(app: web.Application, calibrator: Calibrator | None) -> None:
    """The calibration's routes on ``app`` (after :func:`appliance.control.api.add_routes`)."""
    app[CALIBRATOR] = calibrator
    app.router.add_get("/api/calibration", _get)
    app.router.add_delete("/api/calibration", _delete)
    app.router.add_post("/api/calibration/capture", _capture)
    app.router.add_post("/api/calibration/save", _save)
    app.router.add_post("/api/calibration/discard", _discard)


def calibration_paths(op: Any, ok: Any, err: Any) -> dict[str, Any]:
    """The routes' OpenAPI paths (``op``, ``ok``, ``err``: the document's helpers)."""
    obj = {"type": "object"}
    point = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["point"],
                    "additionalProperties": False,
                    "properties": {"point": {"enum": ["left", "right", "centre"]}},
                }
            }
        },
    }
    refused = err("refused: the reason (the saved calibration stays)")
    return {
        "/api/calibration": {
            "get": op(
                "The mic array's calibration and the guided calibration under way", "read", {"200": ok("state", obj)}
            ),
            "delete": op(
                "Remove the saved calibration", "admin", {"200": ok("removed", obj), "404": err("no mic array")}
            ),
        },
        "/api/calibration/capture": {
            "post": op(
                "Listen for one point while the person at that end of the table talks (answers when done)",
                "admin",
                {"200": ok("the point", obj), "400": err("no such point"), "409": err("busy"), "422": refused},
                requestBody=point,
            )
        },
        "/api/calibration/save": {
            "post": op(
                "Save the fit of the captured points (a config revision, applied live)",
                "admin",
                {"200": ok("saved", obj), "409": err("busy"), "422": refused},
            )
        },
        "/api/calibration/discard": {"post": op("Forget the captured points", "admin", {"200": ok("discarded", obj)})},
    }
