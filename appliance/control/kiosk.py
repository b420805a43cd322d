"""``roombox token`` and ``roombox pin``, and the demo's kiosk link."""

from __future__ import annotations

import argparse
import getpass
import sys

from appliance.config import PanelConfig
from appliance.control.auth import MAX_LIFETIME_DAYS, Auth, AuthError, check_pin_format

MIN_LIFETIME_DAYS = 1 / 24  # an hour: a shorter token would be dead before anyone used it


def _lifetime_s(days: float | None) -> float | None:
    if days is None:
        return None
    if not MIN_LIFETIME_DAYS <= days <= MAX_LIFETIME_DAYS:  # NaN and infinities fail too
        raise AuthError(
            f"--expires-days {days:g}: give {MIN_LIFETIME_DAYS:.4f} (an hour) to {MAX_LIFETIME_DAYS} days, "
            "or leave it out for a token that does not expire"
        )
    return days * 86400


def token_command(a: argparse.Namespace, auth: Auth | None = None) -> int:
    auth = Auth.at() if auth is None else auth
    tokens = auth.tokens
    if a.token_command == "create":
        rec, token = tokens.create(a.scope, a.name, _lifetime_s(a.expires_days), a.allowed_from)
        print(
            f"roombox: token {rec.name} ({rec.id}), scope {rec.scope}, stored as a hash in {tokens.path}; "
            "it is shown once:",
            file=sys.stderr,
        )
        print(token, flush=True)
    elif a.token_command == "list":
        for r in tokens.records(strict=True):  # a damaged file is an error here, not an empty list
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
    if sys.stdin is None or sys.stdin.closed:
        raise AuthError("no stdin to read the PIN from: run it on a terminal, or give the PIN as one line on stdin")
    try:
        if sys.stdin.isatty():
            pin = getpass.getpass("new admin PIN (4-12 digits): ")
            if getpass.getpass("again: ") != pin:
                raise AuthError("the two PINs differ")
            return pin
        line = sys.stdin.readline()
    except EOFError:  # Ctrl-D at the prompt
        raise AuthError("no PIN given (end of input): nothing changed") from None
    if not line:
        raise AuthError("no PIN on stdin: give it as one line, or run it on a terminal")
    return line.strip()


def pin_command(a: argparse.Namespace, auth: Auth | None = None) -> int:
    auth = Auth.at() if auth is None else auth
    if a.pin_command == "set":
        auth.pin.set(check_pin_format(_read_pin()))
        print(f"roombox: admin PIN set ({auth.pin.path})", file=sys.stderr)
    elif a.pin_command == "clear":
        had = auth.pin.path is None or auth.pin.path.exists()
        auth.pin.clear()
        print("roombox: admin PIN removed" if had else "roombox: no admin PIN was set", file=sys.stderr)
    return 0


def kiosk_link(token: str, panel: PanelConfig) -> str:
    """The panel's address with a token in its fragment, for a browser on the box itself."""
    host = panel.host if panel.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{panel.port}/#token={token}"
