"""What every config section shares: unknown keys refused, frozen, errors that name the key.

The application's model (``appliance.config``), each driver's own section (``drivers``) and the simulated
room's scenarios are all built on :class:`Section`; a file that does not validate raises
:class:`ConfigError` with one line per bad key: ``file: [key.path] reason``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import RoomboxError


class ConfigError(RoomboxError, ValueError):
    """A config file that cannot be used; the message names the file, the key and the reason."""


class Section(BaseModel):
    """A config section: unknown keys are refused, values are frozen once validated, NaN and infinities refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def describe_errors(err: ValidationError, source: str) -> str:
    """One line per error: the source, the key in brackets, and the reason."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{source}: [{key}] {msg}")
    return "\n".join(lines)


def read_toml(path: str | os.PathLike[str], what: str, error: type[ValueError]) -> dict[str, Any]:
    """The parsed TOML file at ``path``; a missing or malformed file raises ``error`` naming it."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{p}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{p}: is a directory, not a {what} file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{p}: not valid TOML: {e}") from None
