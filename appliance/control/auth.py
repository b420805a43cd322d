"""Credentials: bearer tokens with scopes, the admin PIN, panel sessions and the PIN's back-off.

Scopes are ordered, each includes the ones before it: ``read`` (state, status, watching the stream and the
panel's events), ``control`` (running the room from the panel: commands over the socket), ``admin``
(configuration, revisions). A token is ``rbx_<id>_<secret>``; only the SHA-256 of the whole token is kept
(``$ROOMBOX_HOME/tokens.json``, mode 0600), and the token is shown once, when it is made. The PIN is kept
as a salted scrypt hash (``$ROOMBOX_HOME/pin.json``). Sessions live in memory: a box that restarts asks
again.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import reprlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.atomic import check_writable, stale_temporaries, write_atomic
from common.errors import RoomboxError
from common.paths import home_dir
from common.strict_json import loads_strict

log = logging.getLogger(__name__)

SCOPES = ("read", "control", "admin")
TOKEN_PREFIX = "rbx_"


class AuthError(RoomboxError, ValueError):
    """A credentials command that cannot be done (unknown scope, bad PIN format, no such token)."""


class StateDamaged(AuthError):
    """``tokens.json`` or ``pin.json`` cannot be read or holds what this version does not understand. Nothing
    is written over it: the message names the file and what is wrong."""


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


TOKEN_ID = re.compile(r"[0-9a-f]{8}")  # a token's id: 8 hex digits (``secrets.token_hex(4)``)
_LIKE_AN_ID = re.compile(r"[0-9a-fA-F]{8}")
MAX_LIFETIME_DAYS = 36500
_LATEST_EXPIRY = datetime(9999, 1, 1, tzinfo=UTC).timestamp()  # beyond it a date cannot be written
_FIELDS = ("id", "name", "scope", "sha256", "created", "expires", "from")


def _check_name(name: str) -> str:
    if not (0 < len(name) <= 64 and name.isprintable()):
        raise AuthError("a token's name: 1 to 64 printable characters")
    if _LIKE_AN_ID.fullmatch(name):
        raise AuthError(f"a token's name {name!r}: 8 hex digits is what a token's id looks like; choose another")
    return name


def _json(raw: bytes) -> Any:
    """A state file's JSON (no NaN or infinities); ValueError saying what is wrong."""
    try:
        return loads_strict(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 2, 40, 40, 4, 4


def _clip(value: object) -> str:
    """A value for a message: short, and however deep it is nested."""
    text = _SHORT.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    def from_json(cls, d: object) -> TokenRecord:
        """A record as ``tokens.json`` keeps it; ValueError naming the field that is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {_clip(d)}")
        if unknown := [k for k in d if k not in _FIELDS]:
            raise ValueError(f"unknown field {_clip(unknown[0])}")
        if missing := [k for k in _FIELDS[:5] if k not in d]:
            raise ValueError(f'no "{missing[0]}"')
        tid, name, scope, sha256, created = (d[k] for k in _FIELDS[:5])
        if not isinstance(tid, str) or not TOKEN_ID.fullmatch(tid):
            raise ValueError(f'"id" {_clip(tid)}: expected 8 hex digits')
        if not isinstance(name, str) or not (0 < len(name) <= 64 and name.isprintable()):
            raise ValueError(f'"name" {_clip(name)}: expected 1 to 64 printable characters')
        if scope not in SCOPES:
            raise ValueError(f'"scope" {_clip(scope)}: expected one of {", ".join(SCOPES)}')
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f'"sha256" {_clip(sha256)}: expected 64 hex digits')
        if not isinstance(created, str) or len(created) > 40:
            raise ValueError(f'"created" {_clip(created)}: expected a date and time')
        try:
            datetime.fromisoformat(created)
        except ValueError:
            raise ValueError(f'"created" {_clip(created)}: expected a date and time') from None
        expires = d.get("expires")
        if expires is not None and not (
            isinstance(expires, int | float)
            and not isinstance(expires, bool)
            and math.isfinite(expires)
            and 0 < expires < _LATEST_EXPIRY
        ):
            raise ValueError(f'"expires" {_clip(expires)}: expected null or a time (seconds since 1970)')
        allowed = d.get("from", [])
        if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
            raise ValueError(f'"from" {_clip(allowed)}: expected a list of addresses or networks')
        try:
            networks = tuple(str(ipaddress.ip_network(a, strict=False)) for a in allowed)
        except ValueError:
            raise ValueError(f'"from" {_clip(allowed)}: expected a list of addresses or networks') from None
        return cls(
            id=tid,
            name=name,
            scope=str(scope),
            sha256=sha256,
            created=created,
            expires=float(expires) if expires is not None else None,
            allowed_from=networks,
        )


def parse_tokens(raw: bytes) -> dict[str, TokenRecord]:
    """The records of a ``tokens.json``, by id; ValueError saying what is wrong (then none of it is used)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ValueError("it starts with a byte-order mark (BOM): save it as UTF-8 without one")
    if not raw.strip():
        raise ValueError("it is empty")
    doc = _json(raw)
    if not isinstance(doc, dict) or list(doc) != ["tokens"] or not isinstance(doc["tokens"], list):
        raise ValueError('expected {"tokens": [...]}')
    records: dict[str, TokenRecord] = {}
    for i, d in enumerate(doc["tokens"], 1):
        try:
            rec = TokenRecord.from_json(d)
        except ValueError as e:
            raise ValueError(f"token record {i}: {e}") from None
        if rec.id in records:
            raise ValueError(
                f"token record {i}: the id {rec.id} is also that of record {list(records).index(rec.id) + 1}"
            )
        records[rec.id] = rec
    return records


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _pick(pool: list[TokenRecord], id_or_name: str) -> list[TokenRecord]:
    """The token with this id; if none has it, every token with this name."""
    return [r for r in pool if r.id == id_or_name] or [r for r in pool if r.name == id_or_name]


class TokenStore:
    """Tokens kept in ``path`` (``None``: in memory only). A running box sees tokens made or revoked by
    ``roombox token`` at its next request: the file is read again whenever it changed. Changes are made under
    a lock (``tokens.json.lock`` beside it), so commands run at once do not undo each other; a file that
    cannot be read or understood is never written over (StateDamaged), and a box reading it accepts none
    of its tokens."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._records: dict[str, TokenRecord] = {}
        self._ephemeral: dict[str, TokenRecord] = {}
        self._stamp: object = None
        self._damage: str | None = None

    # -- file --------------------------------------------------------------------------------------
    def _read(self) -> dict[str, TokenRecord]:
        """The stored records as they are now (none when there is no file); StateDamaged naming the file and
        what is wrong with it."""
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise StateDamaged(f"{self.path}: cannot read it ({e.strerror or e})") from None
        try:
            return parse_tokens(raw)
        except ValueError as e:
            raise StateDamaged(f"{self.path}: damaged: {e}") from None
        except RecursionError:
            raise StateDamaged(f"{self.path}: damaged: nested too deeply") from None

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
            stamp: object = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)  # ctime: a chmod too
        except FileNotFoundError:
            self._records, self._stamp, self._damage = {}, None, None
            return
        except OSError as e:
            stamp = str(e)
        if stamp == self._stamp:
            return
        try:
            records, damage = self._read(), None
        except StateDamaged as e:
            # refuse every stored token rather than guess: a damaged file is reported (once), not half-trusted
            records, damage = {}, str(e)
            log.error("%s; no stored token is accepted until it is fixed", e)
        self._records, self._stamp, self._damage = records, stamp, damage

    @contextmanager
    def _changing(self) -> Iterator[dict[str, TokenRecord]]:
        """The stored records, read under an exclusive lock held until the change is written (``_write``)."""
        assert self.path is not None
        check_writable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _drop_stale_temporaries(self.path)  # every write is made under this lock: any left is stale
            try:
                stored = self._read()
            except StateDamaged as e:
                raise StateDamaged(
                    f"{e}; nothing was written: mend the file, or move it aside to start again with no tokens"
                ) from None
            yield stored
        finally:
            os.close(fd)  # and with it the lock

    def _write(self, stored: dict[str, TokenRecord]) -> None:
        assert self.path is not None
        doc = {"tokens": [r.to_json(with_hash=True) for r in stored.values()]}
        write_atomic(self.path, json.dumps(doc, indent=1, allow_nan=False) + "\n", mode=0o600)
        self._records, self._stamp, self._damage = dict(stored), None, None

    # -- use ---------------------------------------------------------------------------------------
    def create(
        self,
        scope: str,
        name: str | None = None,
        expires_s: float | None = None,
        allowed_from: list[str] | tuple[str, ...] = (),
        persist: bool = True,
    ) -> tuple[TokenRecord, str]:
        """A new token: its record and the token itself (shown once, never stored). Its name may not look
        like an id (8 hex digits); StateDamaged if the file cannot be read, and then nothing is written."""
        _check_scope(scope)
        if expires_s is not None and not 0 < expires_s <= MAX_LIFETIME_DAYS * 86400:  # NaN fails too
            raise AuthError(f"a token's lifetime must be positive and at most {MAX_LIFETIME_DAYS} days")
        if name is not None:
            _check_name(name)
        networks = tuple(_networks(list(allowed_from)))
        if not (persist and self.path is not None):
            self._reload()
            rec, token = self._new(self._records, scope, name, expires_s, networks, persisted=False)
            self._ephemeral[rec.id] = rec
            return rec, token
        with self._changing() as stored:
            rec, token = self._new(stored, scope, name, expires_s, networks, persisted=True)
            stored[rec.id] = rec
            self._write(stored)
        return rec, token

    def _new(
        self,
        stored: dict[str, TokenRecord],
        scope: str,
        name: str | None,
        expires_s: float | None,
        networks: tuple[str, ...],
        persisted: bool,
    ) -> tuple[TokenRecord, str]:
        taken = {*stored, *self._ephemeral, *(r.name for r in [*stored.values(), *self._ephemeral.values()])}
        tid = secrets.token_hex(4)
        while tid in taken:
            tid = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
        rec = TokenRecord(
            id=tid,
            name=name or f"token-{tid}",
            scope=scope,
            sha256=_hash(token),
            created=_now_iso(),
            expires=time.time() + expires_s if expires_s is not None else None,
            allowed_from=networks,
            persisted=persisted,
        )
        return rec, token

    def records(self, strict: bool = False) -> list[TokenRecord]:
        """The tokens, stored and this process's own. A damaged file counts as no stored token (the box
        accepts none of them); ``strict``: raise StateDamaged instead."""
        if strict and self.path is not None:
            try:
                self._records, self._stamp, self._damage = self._read(), None, None
            except StateDamaged as e:
                raise StateDamaged(f"{e}; mend it, or move it aside to start again with no tokens") from None
        else:
            self._reload()
        return [*self._records.values(), *self._ephemeral.values()]

    def revoke(self, id_or_name: str) -> list[TokenRecord]:
        """Revoke the token with this id; if no token has this id, every token with this name. AuthError if
        none; StateDamaged if the file cannot be read, and then nothing is written."""
        if self.path is None:
            gone = _pick([*self._ephemeral.values()], id_or_name)
            if not gone:
                raise AuthError(f"no token with id or name {id_or_name!r}")
            for r in gone:
                self._ephemeral.pop(r.id, None)
            return gone
        with self._changing() as stored:
            gone = _pick([*stored.values(), *self._ephemeral.values()], id_or_name)
            if not gone:
                raise AuthError(f"no token with id or name {id_or_name!r}")
            for r in gone:
                stored.pop(r.id, None)
                self._ephemeral.pop(r.id, None)
            if any(r.persisted for r in gone):
                self._write(stored)
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


def _drop_stale_temporaries(path: Path) -> None:
    """The temporaries of a write killed before its rename (they hold secrets' hashes): called under the file's
    lock, which every write holds, so none of them is a write in progress."""
    for q in stale_temporaries(path):
        try:
            q.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("%s: cannot remove a temporary left by an interrupted write: %s", q, e.strerror)


def check_pin_format(pin: str) -> str:
    if not (4 <= len(pin) <= 12 and pin.isascii() and pin.isdigit()):
        raise AuthError("a PIN is 4 to 12 digits")
    return pin


def _pin_record(raw: bytes) -> dict[str, Any]:
    """A ``pin.json``'s record, checked; ValueError saying what is wrong."""
    doc = _json(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {_clip(doc)}")
    for key, pattern in (("scrypt", r"[0-9a-f]{128}"), ("salt", r"(?:[0-9a-f]{2}){8,64}")):
        if not isinstance(doc.get(key), str) or not re.fullmatch(pattern, doc[key]):
            raise ValueError(f'"{key}" {_clip(doc.get(key))}: not a hash this version makes')
    n, r, p = (doc.get(k) for k in ("n", "r", "p"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
        raise ValueError(f'"n", "r", "p" {_clip([n, r, p])}: expected whole numbers')
    assert isinstance(n, int) and isinstance(r, int) and isinstance(p, int)
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and n * r <= 2**17):
        raise ValueError(f'"n", "r", "p" {_clip([n, r, p])}: not scrypt parameters this version uses')
    return doc


class PinStore:
    """The admin PIN, as a salted scrypt hash in ``path`` (``None``: in memory). A file that cannot be read
    or understood raises StateDamaged (logged once per change): PIN sign-in is off until ``roombox pin set``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] | None = None
        self._logged: str | None = None

    def _load(self) -> dict[str, Any] | None:
        """The PIN's record, or ``None`` when no PIN is set; StateDamaged when the file is damaged."""
        if self.path is None:
            return self._memory
        try:
            doc = _pin_record(self.path.read_bytes())
            self._logged = None
            return doc
        except FileNotFoundError:
            self._logged = None
            return None
        except OSError as e:
            problem = f"{self.path}: cannot read it ({e.strerror or e})"
        except ValueError as e:
            problem = f"{self.path}: damaged: {e}"
        except RecursionError:
            problem = f"{self.path}: damaged: nested too deeply"
        if problem != self._logged:
            log.error("%s; PIN sign-in is off until `roombox pin set` makes a new PIN", problem)
            self._logged = problem
        raise StateDamaged(problem)

    def is_set(self) -> bool:
        """Whether a PIN is set; StateDamaged when its file is damaged."""
        return self._load() is not None

    def set(self, pin: str) -> None:
        check_pin_format(pin)
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(pin.encode(), salt=salt, **_SCRYPT)
        doc = {"scrypt": digest.hex(), "salt": salt.hex(), **_SCRYPT, "set": _now_iso()}
        if self.path is None:
            self._memory = doc
            return
        check_writable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _drop_stale_temporaries(self.path)
            write_atomic(self.path, json.dumps(doc) + "\n", mode=0o600)
        finally:
            os.close(fd)

    def clear(self) -> None:
        if self.path is None:
            self._memory = None
        else:
            self.path.unlink(missing_ok=True)

    def verify(self, pin: str) -> bool:
        """Whether ``pin`` is the PIN (False when none is set); StateDamaged when its file is damaged (not a
        wrong PIN). Slow on purpose (scrypt): call it off the event loop."""
        doc = self._load()
        if doc is None or not isinstance(pin, str) or len(pin) > 64:
            return False
        digest = hashlib.scrypt(pin.encode(), salt=bytes.fromhex(doc["salt"]), n=doc["n"], r=doc["r"], p=doc["p"])
        return hmac.compare_digest(digest.hex(), doc["scrypt"])


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
