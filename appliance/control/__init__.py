"""The box's operating side: credentials, the guard every request goes through, the remote config API.

- :mod:`appliance.control.auth`: tokens with scopes, the admin PIN, panel sessions, the PIN back-off.
- :mod:`appliance.control.guard`: :class:`Control` (Host and Origin checks, credentials, access limits).
- :mod:`appliance.control.store`: the config file and its revisions.
- :mod:`appliance.control.api`: ``/api/config``, revisions, ``/api/status``, ``/api/session``, the OpenAPI
  document.
"""

from appliance.control.auth import SCOPES, Auth, AuthError, Principal, allows
from appliance.control.guard import Control, default_control
from appliance.control.store import ConfigRejected, ConfigStore, Revision

__all__ = ["SCOPES", "Auth", "AuthError", "ConfigRejected", "ConfigStore", "Control", "Principal", "Revision",
           "allows", "default_control"]
