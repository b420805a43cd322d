"""The fleet link's wire form: what a desired-config message may be, and the Home Assistant discovery entries.

Pure: bytes and values in, values out; no broker, no clock. The topics themselves are described in
:mod:`appliance.control.mqtt`.

With ``ha_discovery``, Home Assistant's MQTT discovery entries (retained) describe a device with sensors for
the shot mode, the faces seen, each device's state and the config revision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from appliance.control.store import EMPTY_CONFIG
from common.settings import parse_toml

MAX_DESIRED_BYTES = 256 * 1024
DEVICE_TEXT_MAX = 200  # a device's state with its detail, as the status says it (Home Assistant keeps 255)


def decode_desired(payload: bytes) -> tuple[dict[str, Any], Any]:
    """A desired-config message as (document, request id). Raises ValueError saying what is wrong."""
    if len(payload) > MAX_DESIRED_BYTES:
        raise ValueError(f"desired config too large: {len(payload)} bytes (at most {MAX_DESIRED_BYTES})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("desired config is not UTF-8 text") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors write: neither JSON nor TOML takes it
    request_id: Any = None
    doc: Any
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
        else:
            try:  # a JSON array, null, a string or a number is said as such below, not as a TOML error
                doc = json.loads(text)
            except ValueError:
                doc = parse_toml(text)
    except RecursionError:
        raise ValueError("desired config is nested too deeply") from None
    except ValueError as e:  # TomlError and JSON's errors
        if "int_max_str_digits" in str(e):  # Python's advice to its programmers is no use to the fleet
            raise ValueError("desired config has an integer of more than 4300 digits") from None
        raise ValueError(f"desired config is neither a JSON object nor TOML: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"desired config must be a JSON object or TOML, not {_json_kind(doc)}")
    if isinstance(doc.get("config"), dict):  # the envelope: {"id": ..., "config": {...}}
        extra = set(doc) - {"id", "config"}
        if extra:
            raise ValueError(f"desired config envelope has unknown keys: {', '.join(sorted(extra))}")
        request_id = doc.get("id")
        if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
            raise ValueError(
                f"desired config envelope: id must be a string or an integer, not {_json_kind(request_id)}"
            )
        doc = doc["config"]
    if not doc:
        raise ValueError(f"desired config refused: {EMPTY_CONFIG}")
    return doc, request_id


def _json_kind(value: Any) -> str:
    """What a JSON value is, for a message: "a JSON array", "JSON null", ..."""
    if value is None or isinstance(value, bool):
        return f"JSON {json.dumps(value)}"
    if isinstance(value, list | dict | str):
        return {list: "a JSON array", dict: "a JSON object", str: "a JSON string"}[type(value)]
    return "a JSON number"


def discovery_prefix(ha_prefix: str, box_id: str) -> str:
    """The topic under which a box's Home Assistant discovery entries are published."""
    return f"{ha_prefix}/sensor/roombox_{box_id}"


def discovery_entries(
    ha_prefix: str,
    box_id: str,
    version: str,
    devices: Iterable[str],
    status_topic: str,
    availability_topic: str,
) -> dict[str, dict[str, Any]]:
    """Home Assistant MQTT discovery: topic -> config payload, one sensor per figure (and one per device)."""
    device = {
        "identifiers": [f"roombox_{box_id}"],
        "name": f"Roombox {box_id}",
        "manufacturer": "Roombox",
        "model": "Meeting-room box",
        "sw_version": version,
    }
    sensors: dict[str, tuple[str, str, dict[str, Any]]] = {
        "shot_mode": ("Shot", "{{ value_json.shot.mode }}", {"icon": "mdi:camera-switch"}),
        "faces": ("Faces", "{{ value_json.faces }}", {"state_class": "measurement", "icon": "mdi:account-group"}),
        "config_revision": (
            "Config revision",
            "{{ value_json.config.revision }}",
            {"entity_category": "diagnostic"},
        ),
    }
    for name in sorted(devices):
        sensors[f"device_{name}"] = (
            f"{name} state",
            f"{{{{ value_json.devices['{name}'] }}}}",
            {"entity_category": "diagnostic"},
        )
    out: dict[str, dict[str, Any]] = {}
    for key, (title, template, extra) in sensors.items():
        uid = f"roombox_{box_id}_{key}"
        out[f"{discovery_prefix(ha_prefix, box_id)}/{key}/config"] = {
            "name": title,
            "unique_id": uid,
            "state_topic": status_topic,
            "value_template": template,
            "availability_topic": availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            **extra,
        }
    return out
