"""What every config section shares: unknown keys refused, frozen, errors that name the key.

The application's model (``appliance.config``), each driver's own section (``drivers``) and the simulated
room's scenarios are all built on :class:`Section`; a file that does not validate raises
:class:`ConfigError` with one line per bad key: ``file: [key.path] reason``.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from common.errors import RoomboxError


class ConfigError(RoomboxError, ValueError):
    """A config file that cannot be used; the message names the file, the key and the reason."""


class Section(BaseModel):
    """A config section: unknown keys are refused, values are frozen once validated, NaN and infinities refused,
    and a key that takes a number or a yes/no takes no other kind of value (pydantic alone reads ``true`` as
    1 for a number, ``"30"`` as 30 and ``1`` or ``"yes"`` as true)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_kinds(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors = []
        for key, v in data.items():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is None or v is None:
                continue
            for loc, why in _wrong_kinds(field.annotation, v, (key,)):
                errors.append(InitErrorDetails(type=PydanticCustomError("wrong_kind", why), loc=loc, input=v))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


def _wrong_kinds(annotation: Any, v: Any, loc: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """Where and why ``v`` is not of ``annotation``'s plain kinds, down through lists and tuples (a ``true``
    among an array's positions, a ``"2"`` in a channel map); empty when it is, or when pydantic's own check is
    the one to say (a list where a number goes, a section)."""
    if isinstance(v, list | tuple):
        items = _item_annotations(annotation, len(v))
        if items is None:
            return []
        return [
            err for i, (a, item) in enumerate(zip(items, v, strict=True)) for err in _wrong_kinds(a, item, (*loc, i))
        ]
    why = _wrong_kind(_scalar_kinds(annotation), v)
    return [] if why is None else [(loc, why)]


def _item_annotations(annotation: Any, n: int) -> list[Any] | None:
    """The annotations of the ``n`` items of a list or tuple field (``list[X]``, ``tuple[X, ...]``, ``tuple[X,
    Y]``, through ``Annotated`` and an optional), or None when the field takes no list."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _item_annotations(args[0], n)
    if origin is typing.Union or origin is types.UnionType:
        return next((a for a in (_item_annotations(arg, n) for arg in args) if a is not None), None)
    if origin in (list, set, frozenset) and len(args) == 1:
        return [args[0]] * n
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return [args[0]] * n
    if origin is tuple and len(args) == n:  # another length: pydantic names it
        return list(args)
    return None


def _wrong_kind(kinds: set[type], v: Any) -> str | None:
    """Why ``v`` is not a value of a field taking ``kinds``, or None."""
    numbers = bool(kinds & {int, float})
    if isinstance(v, bool):
        what = "a number or a text" if str in kinds else "a number"
        return f"{what}, not {str(v).lower()}" if bool not in kinds and numbers else None
    if isinstance(v, str):
        if str not in kinds and (numbers or bool in kinds):
            return f"{'a number' if numbers else 'true or false'}, not the text {v[:40]!r}"
        bad = next((i for i, ch in enumerate(v) if (ch < " " and ch not in "\t\n") or ch == "\x7f"), None)
        if bad is not None:  # a NUL, a carriage return: nothing a name, a path, a URL or a token carries
            return f"a control character ({v[bad]!r}) at {bad} in {v[:40]!r}"
        return None
    if isinstance(v, int | float) and kinds == {bool}:
        return f"true or false, not {v!r}"
    return None


def _scalar_kinds(annotation: Any) -> set[type]:
    """The plain kinds (bool, int, float, str) a field's annotation takes at its top level, through
    ``Annotated`` and unions; empty for anything else (lists, tuples, sections, literals)."""
    if annotation in (bool, int, float, str):
        return {annotation}
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_kinds(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return set().union(*(_scalar_kinds(a) for a in typing.get_args(annotation)))
    return set()


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*")


def host_or_ip(v: str, purpose: str) -> str:
    """``v`` when it is an IP address or a host name, else a ValueError: ``'v' is not an IP address or a host
    name`` and the ``purpose`` (e.g. "to listen on")."""
    import ipaddress

    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(v) or len(v) > 253:
        raise ValueError(f"{v[:80]!r} is not an IP address or a host name {purpose}")
    return v


# A check across sections names the key it refuses first: "[doa] fmax_hz = 9000 is above ...".
_NAMED_KEY = re.compile(r"\[([A-Za-z0-9_.-]+)\](?: ([A-Za-z_][A-Za-z0-9_]*) =)?")


def error_key(e: ErrorDetails, doc: Any = None) -> str:
    """The key one validation error is about (``section.key``): its location, or for a check across sections
    the key its reason names first (``doa.fmax_hz``); ``(top level)`` if neither. Given the document, a
    device's driver (which pydantic puts in the location: ``mic_arrays.a.wav.positions``) is left out, as the
    file has no such key."""
    if e["loc"]:
        return ".".join(str(p) for p in _file_location(e["loc"], doc))
    m = _NAMED_KEY.match(error_reason(e))
    return ".".join(k for k in m.groups() if k) if m else "(top level)"


def _file_location(loc: tuple[str | int, ...], doc: Any) -> list[str | int]:
    """``loc`` without the parts that are a section's ``type`` rather than a key of the document."""
    out: list[str | int] = []
    node = doc
    for part in loc:
        if isinstance(node, dict) and part not in node and part == node.get("type"):
            continue  # the tag of a union of sections, chosen by "type"
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return out


def error_reason(e: ErrorDetails) -> str:
    """Why: pydantic's message, without the ``Value error, `` it puts before a validator's own."""
    if e["type"] == "extra_forbidden":
        return "unknown key"
    msg = e["msg"]
    return msg.removeprefix("Value error, ") if e["type"] == "value_error" else msg


def describe_errors(err: ValidationError, source: str, doc: Any = None) -> str:
    """One line per error: the source, the key in brackets (in the document ``doc``), and the reason."""
    lines = []
    for e in err.errors():
        where = f"[{error_key(e, doc)}] " if e["loc"] else ""  # a check across sections names its keys itself
        lines.append(f"{source}: {where}{error_reason(e)}")
    return "\n".join(lines)


MAX_KEY_PARTS = 32

# What the deep-key scan sees: a bare key part, a quoted one (to the closing quote or the line's end, so that
# the scan stays linear), a dot, blanks, or anything else.
_TOKENS = re.compile(r"""([A-Za-z0-9_-]+)|("(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?)|(\.)|([ \t]+)|(.|\n)""")


class TomlError(ValueError):
    """Text that is not a TOML document this software reads; the message says why."""


def _deep_key(text: str) -> int | None:
    """The line of the first key of more than MAX_KEY_PARTS dotted parts, or None. (tomllib's time grows
    with the square of a dotted key's parts: one of 100,000 parts takes minutes.)"""
    if not any(line.count(".") >= MAX_KEY_PARTS for line in text.splitlines()):
        return None
    parts, after_dot = 0, True
    for m in _TOKENS.finditer(text):
        bare, quoted, dot, blank, _ = m.groups()
        if blank is not None:
            continue
        if bare is not None or quoted is not None:
            parts = parts + 1 if after_dot else 1
            after_dot = False
        elif dot is not None and not after_dot:
            after_dot = True
        else:
            parts, after_dot = 0, True
        if parts > MAX_KEY_PARTS:
            return text.count("\n", 0, m.start()) + 1
    return None


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, refusing what would take it minutes or overflow its stack: raises TomlError."""
    line = _deep_key(text)
    if line is not None:
        raise TomlError(f"a key of more than {MAX_KEY_PARTS} dotted parts (line {line})")
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise TomlError("arrays or tables nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        raise TomlError(str(e)) from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits: Python will not convert it
        raise TomlError(f"a value it cannot read: {e}") from None


def read_toml(path: str | os.PathLike[str], what: str, error: type[ValueError]) -> dict[str, Any]:
    """The parsed TOML file at ``path``; a missing or malformed file raises ``error`` naming it."""
    p = Path(path)
    try:
        if p.exists() and not p.is_dir() and not p.is_file():  # a pipe or a device: reading it may never end
            raise error(f"{p}: is not a regular file (a pipe or a device), not a {what} file")
        return parse_toml(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{p}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{p}: is a directory, not a {what} file") from None
    except (TomlError, UnicodeDecodeError) as e:
        raise error(f"{p}: not valid TOML: {e}") from None
    except OSError as e:  # e.g. a name longer than the file system takes
        raise error(f"{str(p)[:80]}: cannot read the {what} file: {e.strerror}") from None
