"""The box's operating side: credentials, the guard every request goes through, the remote config API.

- :mod:`appliance.control.auth`: tokens with scopes, the admin PIN, panel sessions, the PIN back-off.
- :mod:`appliance.control.guard`: :class:`Control` (Host and Origin checks, credentials, access limits).
- :mod:`appliance.control.store`: the config file and its revisions.
- :mod:`appliance.control.api`: ``/api/config``, revisions, ``/api/status``, ``/api/session``, the OpenAPI
  document.

Running the box as a managed service: :mod:`appliance.control.sdnotify` (systemd notifications),
:mod:`appliance.control.mqtt` (fleet control over MQTT: the client; :mod:`~appliance.control.mqtt_link` sets
up its connection, :mod:`~appliance.control.fleet_wire` is its wire form, :mod:`~appliance.control.fleet_state`
what it keeps in ``$ROOMBOX_HOME``), :mod:`appliance.control.metrics` (metrics and health); each is imported on
its own.
"""

from typing import Any

# imported on first use: appliance.config imports appliance.control.settings, and guard imports appliance.config
_EXPORTS = {
    "SCOPES": "appliance.control.auth",
    "Auth": "appliance.control.auth",
    "AuthError": "appliance.control.auth",
    "Principal": "appliance.control.auth",
    "allows": "appliance.control.auth",
    "Control": "appliance.control.guard",
    "default_control": "appliance.control.guard",
    "ConfigRejected": "appliance.control.store",
    "ConfigStore": "appliance.control.store",
    "Revision": "appliance.control.store",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'appliance.control' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
