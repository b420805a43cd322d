"""``roombox token`` and ``roombox pin``, and the demo's kiosk link."""

from __future__ import annotations

import argparse
import getpass
import sys

from appliance.config import PanelConfig
from appliance.control.auth import Auth, AuthError, check_pin_format


def token_command(a: argparse.Namespace, auth: Auth | None = None) -> int:
    auth = Auth.at() if auth is None else auth
    tokens = auth.tokens
    if a.token_command == "create":
        expires = a.expires_days * 86400 if a.expires_days is not None else None
        rec, token = tokens.create(a.scope, a.name, expires, a.allowed_from)
        print(
            f"roombox: token {rec.name} ({rec.id}), scope {rec.scope}, stored as a hash in {tokens.path}; "
            "it is shown once:",
            file=sys.stderr,
        )
        print(token, flush=True)
    elif a.token_command == "list":
        for r in tokens.records():
            j = r.to_json()
            print(
                f"{j['id']}  {j['scope']:7}  {j['name']}  created {j['created']}"
                + (f"  expires {j['expires']}" if j["expires"] else "")
                + (f"  from {','.join(j['from'])}" if j["from"] else "")
            )
    elif a.token_command == "revoke":
        for r in tokens.revoke(a.token):
            print(f"roombox: revoked {r.name} ({r.id})", file=sys.stderr)
    return 0


def _read_pin() -> str:
    if sys.stdin.isatty():
        pin = getpass.getpass("new admin PIN (4-12 digits): ")
        if getpass.getpass("again: ") != pin:
            raise AuthError("the two PINs differ")
        return pin
    return sys.stdin.readline().strip()


def pin_command(a: argparse.Namespace, auth: Auth | None = None) -> int:
    auth = Auth.at() if auth is None else auth
    if a.pin_command == "set":
        auth.pin.set(check_pin_format(_read_pin()))
        print(f"roombox: admin PIN set ({auth.pin.path})", file=sys.stderr)
    elif a.pin_command == "clear":
        auth.pin.clear()
        print("roombox: admin PIN removed", file=sys.stderr)
    return 0


def kiosk_link(token: str, panel: PanelConfig) -> str:
    """The panel's address with a token in its fragment, for a browser on the box itself."""
    host = panel.host if panel.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{panel.port}/#token={token}"
