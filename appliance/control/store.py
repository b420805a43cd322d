"""The running config, its file and its history.

Every change is written atomically (``common.atomic``: a reader, or a box that restarts after a crash,
sees the old file or the new one) and recorded as a revision: who, when, which keys changed, which of
those need a restart, and the whole document, one JSON file per revision under
``$ROOMBOX_HOME/config-revisions/``. The config file is written before its revision: a box killed between
the two finds a file newer than the last revision at its next start and records it as such.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance.config import Config, config_to_toml, load_config
from common.atomic import stale_temporaries, write_atomic
from common.errors import RoomboxError
from common.settings import error_key, error_reason, parse_toml

log = logging.getLogger(__name__)

_REV = re.compile(r"^(\d{6,})\.json$")
_REV_TMP = re.compile(r"^\.\d{6,}\.json\.[A-Za-z0-9_]{8}\.tmp$")  # write_atomic's temporaries of revisions

# The web server's own keys: [access] applies live (read at each request) except the body limit, fixed when
# the application is made; [panel] (where it listens) needs a restart. Every other key is the box's business.
SERVER_RESTART = ("panel.", "access.max_body_kb")

EMPTY_CONFIG = (
    "the config is empty: it would put every key back to its default. Send the keys to set (every key left "
    "out takes its default); to go back to the defaults on purpose, send one empty section, e.g. [stream]"
)

OnConfig = Callable[[Config], list[str]]


class RevisionDamaged(RoomboxError, ValueError):
    """A revision file that exists but cannot be read as one (truncated, edited, of another shape)."""


class StoreError(RoomboxError, OSError):
    """The config or its revision could not be written (a full disk, a directory in the file's place); the
    message says what is in force now."""


class ConfigRejected(RoomboxError, ValueError):
    """A proposed config that does not validate: ``errors`` lists each key and the reason."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        # a check across sections names its keys in its reason already
        super().__init__(
            "; ".join(e["reason"] if e["reason"].startswith("[") else f"[{e['key']}] {e['reason']}" for e in errors)
        )


def validate(doc: Any) -> Config:
    """The same validation as the file's; raises ConfigRejected naming each bad key."""
    try:
        return Config.model_validate(doc)
    except ValidationError as e:
        errors = []
        for err in e.errors():
            errors.append({"key": error_key(err, doc), "reason": error_reason(err)})
        raise ConfigRejected(errors) from None


def load_toml_text(text: str) -> Config:
    return validate(parse_toml(text))


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON documents (a changed list is one key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if prefix and set(old) == set(new) and list(old) != list(new):
            return [prefix.rstrip(".")]  # the same devices in another order: the first is the one used
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


@dataclass(frozen=True)
class Revision:
    id: int
    who: str
    when: str
    changed: list[str]
    restart: list[str]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "who": self.who,
            "when": self.when,
            "changed": self.changed,
            "restart": self.restart,
            "note": self.note,
        }


def _why(e: Exception, path: Path) -> str:
    """What went wrong writing ``path``, naming it once."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename or path}: {e.strerror}"
    return str(e)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass(frozen=True)
class LastGood:
    """The config a box starts on when its saved config is refused: the newest revision that validates."""

    revision: int
    config: Config
    refused: str  # why the file was refused
    kept_as: Path  # where the refused file was copied, for its author to mend

    def reason(self, path: Path) -> str:
        return (
            f"{path} was refused at start ({self.refused}); the box runs on revision {self.revision}, the last "
            f"config that was good; the refused file is kept as {self.kept_as}: mend it, or save a config "
            "from the panel or the API"
        )


def last_good(path: Path, revisions_dir: Path, refused: Exception) -> LastGood | None:
    """When the box's saved config at ``path`` cannot be used (hand-edited wrong, or written by a version that
    took what this one refuses), the newest revision in ``revisions_dir`` that this version validates, and the
    refused file copied beside it (``NAME.refused``, atomically) so that nothing is lost when the next change
    writes the file; None when no revision validates (then the box cannot start, and says why)."""
    for rid, cfg in good_revisions(revisions_dir):
        kept = path.with_name(path.name + ".refused")
        try:
            write_atomic(kept, path.read_bytes(), mode=0o600)
        except OSError as e:
            log.warning("%s: cannot keep a copy of the refused config: %s", kept, e.strerror)
        return LastGood(rid, cfg, str(refused), kept)
    return None


def good_revisions(revisions_dir: Path) -> Iterator[tuple[int, Config]]:
    """The revisions in ``revisions_dir`` that this version validates, newest first (none without a history)."""
    try:
        ids = revision_ids(revisions_dir)
    except OSError:
        return  # no history to fall back on
    for rid in reversed(ids):
        try:
            data = json.loads(revision_file(revisions_dir, rid).read_text(encoding="utf-8"))
            cfg = Config.model_validate(data["config"])
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            continue  # damaged, or refused by this version too
        yield rid, cfg


def revision_ids(revisions_dir: Path) -> list[int]:
    """The ids of the revisions kept in ``revisions_dir``, oldest first (OSError when it cannot be listed)."""
    return sorted(int(m.group(1)) for p in revisions_dir.iterdir() if (m := _REV.match(p.name)))


def revision_file(revisions_dir: Path, rid: int) -> Path:
    return revisions_dir / f"{rid:06d}.json"


class ConfigStore:
    """The config file at ``path`` and its revisions in ``revisions_dir``.

    ``current`` is the config in force. ``write(cfg, who)`` records and persists a new one and returns its
    revision; ``restore(id, who)`` writes an old revision's document again (as a new revision). A write that
    changes nothing records nothing and returns the latest revision's id with no keys changed.
    """

    def __init__(self, path: Path, revisions_dir: Path, current: Config, keep: int = 500) -> None:
        self.path = path
        self.revisions_dir = revisions_dir
        self.current = current
        self.keep = keep
        self.pending_restart: set[str] = set()  # keys changed since the box started that wait for a restart
        self.started: dict[str, Any] = current.model_dump(mode="json")
        # called after each revision written (whoever wrote it: the API, the panel, MQTT, the calibration), so
        # that what the panels show follows the config
        self.on_change: list[Callable[[Revision], object]] = []
        try:
            revisions_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{revisions_dir}: cannot hold the config's revisions: {e.strerror}") from None
        stale = stale_temporaries(path)  # of a write that was killed before its rename
        stale += [q for q in revisions_dir.iterdir() if _REV_TMP.match(q.name)]
        for q in stale:
            q.unlink(missing_ok=True)
        if not path.exists():
            write_atomic(path, config_to_toml(current))
        doc = current.model_dump(mode="json")
        before, damaged = None, []
        for rid in reversed(self._ids()):  # the newest revision that can be read: a damaged one is skipped
            try:
                before = self.document(rid)
                break
            except (KeyError, ValueError, TypeError, OSError, RecursionError) as e:
                damaged.append(f"{self._file(rid)}: {type(e).__name__}: {e}")
        for why in damaged:
            log.warning("config revision unreadable, skipped: %s", why)
        if before is None:
            note = "the config the box started with"
            if damaged:
                note += f" (no earlier revision could be read: {len(damaged)} damaged)"
            self._record(doc, "box", [], [], note)
        elif before != doc:
            self._record(
                doc,
                "box",
                changed_keys(before, doc),
                [],
                "changed outside the API since the last revision (the file edited, a write interrupted, "
                "roombox demo's simulated room put in as the main devices, or the box started on an earlier "
                "revision because it could not start on the last)",
            )

    @classmethod
    def open(cls, path: Path, revisions_dir: Path, default: Config | None = None) -> ConfigStore:
        """The store for the file at ``path``; a missing file is written from ``default`` (or the defaults)."""
        cfg = load_config(path) if path.exists() else default if default is not None else Config()
        return cls(path, revisions_dir, cfg)

    # -- history -----------------------------------------------------------------------------------
    def _ids(self) -> list[int]:
        return revision_ids(self.revisions_dir)

    def latest_id(self) -> int:
        ids = self._ids()
        return ids[-1] if ids else 0

    def _file(self, rid: int) -> Path:
        return revision_file(self.revisions_dir, rid)

    def _read(self, rid: int) -> dict[str, Any]:
        """Revision ``rid``'s record; KeyError if there is none, RevisionDamaged if it cannot be read."""
        f = self._file(rid)
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyError(rid) from None
        except (OSError, ValueError, RecursionError) as e:
            raise RevisionDamaged(f"{f}: cannot be read: {type(e).__name__}: {e}") from None
        fields = {"id": int, "who": str, "when": str, "changed": list, "restart": list, "config": dict}
        if not isinstance(data, dict) or any(not isinstance(data.get(k), t) for k, t in fields.items()):
            raise RevisionDamaged(f"{f}: not a revision record (each of {', '.join(fields)} is needed)")
        return data

    def document(self, rid: int) -> dict[str, Any]:
        doc: dict[str, Any] = self._read(rid)["config"]
        return doc

    def revision(self, rid: int) -> Revision:
        d = self._read(rid)
        return Revision(d["id"], d["who"], d["when"], d["changed"], d["restart"], str(d.get("note", "")))

    def revisions(self) -> list[Revision]:
        """Newest first; a damaged revision is listed as such (who ``?``, its note says why)."""
        out = []
        for rid in reversed(self._ids()):
            try:
                out.append(self.revision(rid))
            except KeyError:
                continue
            except RevisionDamaged as e:
                out.append(Revision(rid, "?", "", [], [], f"damaged: {e}"))
        return out

    def _record(self, doc: dict[str, Any], who: str, changed: list[str], restart: list[str], note: str) -> Revision:
        rev = Revision(self.latest_id() + 1, who, _iso(time.time()), changed, restart, note)
        write_atomic(self._file(rev.id), json.dumps({**rev.to_json(), "config": doc}, indent=1) + "\n")
        ids = self._ids()
        for old in ids[: max(0, len(ids) - self.keep)]:
            self._file(old).unlink(missing_ok=True)
        return rev

    # -- changes -----------------------------------------------------------------------------------
    def check(self, new: Config) -> str:
        """``new`` as its file would say it; ConfigRejected when the file would not read back as ``new`` (a
        value TOML cannot carry, or one valid as given but not as its file says it): refused, not written."""
        text = config_to_toml(new)
        try:
            same, why = load_toml_text(text) == new, ""
        except ConfigRejected as e:
            same, why = False, f": read back, {e}"
        if not same:
            raise ConfigRejected(
                [{"key": "(top level)", "reason": f"this config does not survive a round trip through TOML{why}"}]
            )
        return text

    def write(self, new: Config, who: str, on_config: OnConfig | None = None, note: str = "") -> Revision:
        """Persist ``new`` (atomically), apply it, record the revision. ``on_config(new)`` applies what it can
        live and returns the keys (dotted, or section prefixes) that need a restart; without it every
        change outside the web server's own live keys needs one."""
        old_doc, doc = self.current.model_dump(mode="json"), new.model_dump(mode="json")
        changed = changed_keys(old_doc, doc)
        if not changed:  # nothing to apply, write or record: the latest revision stands
            return Revision(self.latest_id(), who, _iso(time.time()), [], [], "no change")
        text = self.check(new)
        old = self.current
        restart = [k for k in changed if k.startswith(SERVER_RESTART)]
        rest = [k for k in changed if not k.startswith("access.") and not k.startswith("panel.")]
        if rest:
            if on_config is None:
                restart += rest
            else:
                try:  # applied first: a config the running box cannot take is refused, the file left as it was
                    needs = on_config(new)
                except Exception as e:  # a config the box cannot take: the sender is told why; no traceback
                    log.warning("a config the running box cannot apply was refused: %s: %s", type(e).__name__, e)
                    log.debug("applying the config failed", exc_info=True)
                    try:
                        on_config(old)  # whatever part of it was taken, undone
                    except Exception:
                        log.exception("applying the running config again failed")
                    reason = f"the running box cannot apply it: {type(e).__name__}: {e}"
                    # the sections changed, of which one is at fault (``[doa]`` with no FFT bin in its band, say)
                    key = ", ".join(sorted({k.split(".")[0] for k in rest}))
                    raise ConfigRejected([{"key": key, "reason": reason}]) from None
                restart += [k for k in rest if any(k == n or k.startswith(n.rstrip(".") + ".") for n in needs)]

        def undo() -> None:
            if rest and on_config is not None:
                on_config(old)  # the box goes on as the file says

        try:
            write_atomic(self.path, text)
        except (OSError, ValueError) as e:  # ValueError: a directory or a device in the file's place
            undo()
            raise StoreError(f"not saved, the config in force is unchanged: {_why(e, self.path)}") from None
        # a key set back to what the box runs with (it started with it) needs no restart
        since_start = changed_keys(self.started, doc)

        def waits(k: str) -> bool:
            return any(d == k or d.startswith(k + ".") or k.startswith(d + ".") for d in since_start)

        restart = sorted({k for k in restart if waits(k)})
        try:
            rev = self._record(doc, who, changed, restart, note)
        except (OSError, ValueError) as e:  # the history cannot take it (a full disk): the file goes back
            why = _why(e, self._file(self.latest_id() + 1))
            try:
                write_atomic(self.path, config_to_toml(old))
            except (OSError, ValueError):
                self.current = new  # in force and in the file; the next start records it as changed outside
                self.pending_restart |= set(restart)
                raise StoreError(
                    f"the config is in force and in {self.path}, but its revision was not recorded: {why}"
                ) from None
            undo()
            raise StoreError(f"not saved, the config in force is unchanged: {why}") from None
        self.current = new
        self.pending_restart = {k for k in self.pending_restart if waits(k)} | set(restart)
        for tell in self.on_change:
            try:
                tell(rev)
            except Exception:  # the revision stands; a panel that is not told catches up at its next event
                log.exception("telling of config revision %d failed", rev.id)
        return rev

    def restore(self, rid: int, who: str, on_config: OnConfig | None = None) -> Revision:
        """Write revision ``rid``'s document again, as a new revision. KeyError if there is no such revision;
        ConfigRejected if it no longer validates (e.g. a driver is gone)."""
        cfg = validate(self.document(rid))
        return self.write(cfg, who, on_config, note=f"restored revision {rid}")
