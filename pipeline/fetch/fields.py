"""Reading registry source entries, failing with a message that points at the bad entry.

Registry entries are plain YAML dicts written by hand; a typo should produce "`url` is missing"
rather than a ``KeyError`` deep inside a download.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from pipeline.errors import PosezooError
from pipeline.fetch.checksum import is_sha256


def describe(source: Mapping[str, Any]) -> str:
    """The entry as one line of JSON, so the user can find it in the registry."""
    return json.dumps(dict(source), sort_keys=True, default=str)


def _fail(source: Mapping[str, Any], key: str, what: str) -> PosezooError:
    return PosezooError(f"source {describe(source)}: `{key}` {what}; fix the registry entry")


def text(source: Mapping[str, Any], key: str) -> str:
    """A required, non-empty string field."""
    value = source.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, "is missing or not a non-empty string")
    return value.strip()


def optional_text(source: Mapping[str, Any], key: str) -> str:
    """An optional string field; "" when absent."""
    value = source.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(source, key, f"must be a string, not {value!r}")
    return value.strip()


def sha256(source: Mapping[str, Any], key: str) -> str:
    """An optional sha256 field, lower-cased; "" when absent or empty (= not pinned yet)."""
    value = optional_text(source, key).lower()
    if value and not is_sha256(value):
        raise _fail(source, key, f"must be 64 hex digits (got {value!r})")
    return value


def size(source: Mapping[str, Any], key: str) -> int | None:
    """An optional non-negative byte count."""
    value = source.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(source, key, f"must be a byte count (got {value!r})")
    return value
