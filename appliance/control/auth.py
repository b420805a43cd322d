"""Credentials: bearer tokens with scopes, the admin PIN, panel sessions and the PIN's back-off.

Scopes are ordered, each includes the ones before it: ``read`` (state, status, watching the stream and the
panel's events), ``control`` (running the room from the panel: commands over the socket), ``admin``
(configuration, revisions). A token is ``rbx_<id>_<secret>``; only the SHA-256 of the whole token is kept
(``$ROOMBOX_HOME/tokens.json``, mode 0600), and the token is shown once, when it is made. The PIN is kept
as a salted scrypt hash (``$ROOMBOX_HOME/pin.json``). Sessions live in memory: a box that restarts asks
again.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.atomic import write_atomic
from common.errors import RoomboxError
from common.paths import home_dir

log = logging.getLogger(__name__)

SCOPES = ("read", "control", "admin")
TOKEN_PREFIX = "rbx_"


class AuthError(RoomboxError, ValueError):
    """A credentials command that cannot be done (unknown scope, bad PIN format, no such token)."""


def allows(have: str, need: str) -> bool:
    """Whether scope ``have`` covers ``need``."""
    return have in SCOPES and SCOPES.index(have) >= SCOPES.index(need)


def _now_iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat(timespec="seconds")


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise AuthError(f"scope {scope!r}: give one of {', '.join(SCOPES)}")
    return scope


def _networks(addresses: list[str] | tuple[str, ...]) -> list[str]:
    out = []
    for a in addresses:
        try:
            out.append(str(ipaddress.ip_network(a, strict=False)))
        except ValueError:
            raise AuthError(f"--from {a!r}: not an IP address or network") from None
    return out


def _address_in(remote: str | None, networks: list[str]) -> bool:
    if not networks:
        return True
    if remote is None:
        return False
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(n) for n in networks)


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    scope: str
    sha256: str
    created: str
    expires: float | None = None  # unix time
    allowed_from: tuple[str, ...] = ()
    persisted: bool = True

    def to_json(self, with_hash: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "created": self.created,
            "expires": _now_iso(self.expires) if self.expires is not None else None,
            "from": list(self.allowed_from),
        }
        if with_hash:
            out["sha256"] = self.sha256
            out["expires"] = self.expires
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TokenRecord:
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            scope=_check_scope(str(d["scope"])),
            sha256=str(d["sha256"]),
            created=str(d["created"]),
            expires=float(d["expires"]) if d.get("expires") is not None else None,
            allowed_from=tuple(str(a) for a in d.get("from", ())),
        )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Tokens kept in ``path`` (``None``: in memory only). A running box sees tokens made or revoked by
    ``roombox token`` at its next request: the file is read again whenever it changed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._records: dict[str, TokenRecord] = {}
        self._ephemeral: dict[str, TokenRecord] = {}
        self._stamp: tuple[int, int, int] | None = None

    # -- file --------------------------------------------------------------------------------------
    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._records, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = {r.id: r for r in (TokenRecord.from_json(d) for d in data["tokens"])}
        except (OSError, ValueError, KeyError, TypeError) as e:
            # refuse every token rather than guess: a damaged file is reported, not half-trusted
            log.error("%s: cannot read tokens (%s); no token is accepted until it is fixed", self.path, e)
            records = {}
        self._records, self._stamp = records, stamp

    def _save(self) -> None:
        assert self.path is not None
        doc = {"tokens": [r.to_json(with_hash=True) for r in self._records.values()]}
        write_atomic(self.path, json.dumps(doc, indent=1) + "\n", mode=0o600)
        self._stamp = None

    # -- use ---------------------------------------------------------------------------------------
    def create(
        self,
        scope: str,
        name: str | None = None,
        expires_s: float | None = None,
        allowed_from: list[str] | tuple[str, ...] = (),
        persist: bool = True,
    ) -> tuple[TokenRecord, str]:
        """A new token: its record and the token itself (shown once, never stored)."""
        _check_scope(scope)
        if expires_s is not None and not expires_s > 0:
            raise AuthError("a token's lifetime must be positive")
        if name is not None and not (0 < len(name) <= 64 and name.isprintable()):
            raise AuthError("a token's name: 1 to 64 printable characters")
        persist = persist and self.path is not None
        self._reload()
        tid = secrets.token_hex(4)
        while tid in self._records or tid in self._ephemeral:
            tid = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
        rec = TokenRecord(
            id=tid,
            name=name or f"token-{tid}",
            scope=scope,
            sha256=_hash(token),
            created=_now_iso(),
            expires=time.time() + expires_s if expires_s is not None else None,
            allowed_from=tuple(_networks(list(allowed_from))),
            persisted=persist,
        )
        if persist:
            self._records[tid] = rec
            self._save()
        else:
            self._ephemeral[tid] = rec
        return rec, token

    def records(self) -> list[TokenRecord]:
        self._reload()
        return [*self._records.values(), *self._ephemeral.values()]

    def revoke(self, id_or_name: str) -> list[TokenRecord]:
        """Revoke the token with this id, or every token with this name; raises AuthError if none."""
        self._reload()
        gone = [r for r in self.records() if id_or_name in (r.id, r.name)]
        if not gone:
            raise AuthError(f"no token with id or name {id_or_name!r}")
        for r in gone:
            self._records.pop(r.id, None)
            self._ephemeral.pop(r.id, None)
        if any(r.persisted for r in gone):
            self._save()
        return gone

    def check(self, token: str, remote: str | None) -> TokenRecord | None:
        """The record of a valid, unexpired token presented from ``remote``; ``None`` otherwise."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        tid = token[len(TOKEN_PREFIX) :].split("_", 1)[0]
        return self.valid(tid, _hash(token), remote)

    def valid(self, tid: str, sha256: str, remote: str | None) -> TokenRecord | None:
        self._reload()
        rec = self._records.get(tid) or self._ephemeral.get(tid)
        if rec is None or not hmac.compare_digest(rec.sha256, sha256):
            return None
        if rec.expires is not None and time.time() >= rec.expires:
            return None
        if not _address_in(remote, list(rec.allowed_from)):
            return None
        return rec


# ---------- the PIN ----------

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def check_pin_format(pin: str) -> str:
    if not (4 <= len(pin) <= 12 and pin.isascii() and pin.isdigit()):
        raise AuthError("a PIN is 4 to 12 digits")
    return pin


class PinStore:
    """The admin PIN, as a salted scrypt hash in ``path`` (``None``: in memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any] | None:
        if self.path is None:
            return self._memory
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.error("%s: cannot read the PIN (%s); PIN sign-in is off until it is set again", self.path, e)
            return None

    def is_set(self) -> bool:
        return self._load() is not None

    def set(self, pin: str) -> None:
        check_pin_format(pin)
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(pin.encode(), salt=salt, **_SCRYPT)
        doc = {"scrypt": digest.hex(), "salt": salt.hex(), **_SCRYPT, "set": _now_iso()}
        if self.path is None:
            self._memory = doc
        else:
            write_atomic(self.path, json.dumps(doc) + "\n", mode=0o600)

    def clear(self) -> None:
        if self.path is None:
            self._memory = None
        else:
            self.path.unlink(missing_ok=True)

    def verify(self, pin: str) -> bool:
        """Slow on purpose (scrypt): call it off the event loop."""
        doc = self._load()
        if doc is None or not isinstance(pin, str) or len(pin) > 64:
            return False
        try:
            digest = hashlib.scrypt(
                pin.encode(), salt=bytes.fromhex(doc["salt"]), n=int(doc["n"]), r=int(doc["r"]), p=int(doc["p"])
            )
            return hmac.compare_digest(digest.hex(), str(doc["scrypt"]))
        except (KeyError, ValueError, TypeError):
            log.error("%s: damaged PIN record", self.path)
            return False


class Throttle:
    """Back-off on wrong PINs, per client address: ``free`` tries, then waits of 1, 2, 4 ... seconds up to
    ``max_wait_s`` between tries. Forgets an address after a success or a quiet hour."""

    def __init__(self, max_addresses: int = 4096) -> None:
        self._fails: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.max_addresses = max_addresses

    def wait_s(self, addr: str, free: int, max_wait_s: float, now: float | None = None) -> float:
        """Seconds this address must still wait before its next try (0: it may try)."""
        now = time.monotonic() if now is None else now
        n, last = self._fails.get(addr, (0, 0.0))
        if n < free or now - last > 3600:
            return 0.0
        wait = min(2.0 ** (n - free), max_wait_s)
        return max(0.0, last + wait - now)

    def failed(self, addr: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        n, last = self._fails.pop(addr, (0, 0.0))
        n = 1 if now - last > 3600 else n + 1
        self._fails[addr] = (n, now)
        while len(self._fails) > self.max_addresses:
            self._fails.popitem(last=False)
        return n

    def succeeded(self, addr: str) -> None:
        self._fails.pop(addr, None)


# ---------- who is asking ----------


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: ``who`` for logs and revisions, ``scope``, and how (``token`` or ``session``)."""

    who: str
    scope: str
    via: str
    token_id: str | None = None
    session_id: str | None = None


@dataclass
class Session:
    who: str
    scope: str  # the base scope (from a token, or "admin" from the PIN alone)
    expires: float  # monotonic
    token_id: str | None = None
    token_sha256: str | None = None
    admin_until: float = 0.0  # monotonic: admin rights from the PIN until then
    created: float = field(default_factory=time.monotonic)


class Sessions:
    """Panel sessions in memory, bounded (the oldest goes first)."""

    def __init__(self, max_sessions: int = 512) -> None:
        self._s: OrderedDict[str, Session] = OrderedDict()
        self.max_sessions = max_sessions

    def issue(self, s: Session) -> str:
        sid = secrets.token_urlsafe(32)
        self._s[sid] = s
        while len(self._s) > self.max_sessions:
            self._s.popitem(last=False)
        return sid

    def get(self, sid: str, now: float | None = None) -> Session | None:
        now = time.monotonic() if now is None else now
        s = self._s.get(sid)
        if s is None:
            return None
        if now >= s.expires:
            del self._s[sid]
            return None
        return s

    def drop(self, sid: str) -> None:
        self._s.pop(sid, None)

    def __len__(self) -> int:
        return len(self._s)


class Auth:
    """Tokens, the PIN, sessions and the PIN back-off, together."""

    def __init__(self, tokens: TokenStore, pin: PinStore) -> None:
        self.tokens = tokens
        self.pin = pin
        self.sessions = Sessions()
        self.throttle = Throttle()

    @classmethod
    def at(cls, home: Path | None = None) -> Auth:
        """Credentials kept under ``home`` (default ``$ROOMBOX_HOME``)."""
        home = home_dir() if home is None else home
        return cls(TokenStore(home / "tokens.json"), PinStore(home / "pin.json"))

    @classmethod
    def in_memory(cls) -> Auth:
        return cls(TokenStore(None), PinStore(None))

    def from_bearer(self, token: str, remote: str | None) -> Principal | None:
        rec = self.tokens.check(token, remote)
        if rec is None:
            return None
        return Principal(who=f"token {rec.name} ({rec.id})", scope=rec.scope, via="token", token_id=rec.id)

    def from_session(self, sid: str, remote: str | None) -> Principal | None:
        s = self.sessions.get(sid)
        if s is None:
            return None
        if s.token_id is not None and (
            s.token_sha256 is None or self.tokens.valid(s.token_id, s.token_sha256, remote) is None
        ):
            self.sessions.drop(sid)  # its token was revoked or expired, or it is used from elsewhere
            return None
        scope = "admin" if time.monotonic() < s.admin_until else s.scope
        return Principal(who=s.who, scope=scope, via="session", token_id=s.token_id, session_id=sid)

    def session_for_token(self, rec: TokenRecord, ttl_s: float) -> str:
        return self.sessions.issue(
            Session(
                who=f"token {rec.name} ({rec.id}) session",
                scope=rec.scope,
                expires=time.monotonic() + ttl_s,
                token_id=rec.id,
                token_sha256=rec.sha256,
            )
        )

    def session_for_pin(self, remote: str | None, existing: str | None, admin_s: float) -> str:
        """Admin rights for ``admin_s``: on the caller's existing session if it has one, else a new session."""
        now = time.monotonic()
        if existing is not None and (s := self.sessions.get(existing)) is not None:
            s.admin_until = now + admin_s
            s.expires = max(s.expires, s.admin_until)
            if not s.who.endswith("+ PIN"):
                s.who += " + PIN"
            return existing
        return self.sessions.issue(
            Session(who=f"PIN from {remote}", scope="read", expires=now + admin_s, admin_until=now + admin_s)
        )
