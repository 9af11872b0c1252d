"""What every source kind needs besides the registry entry itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.fetch.cache import Cache
from pipeline.fetch.download import Transfer


@dataclass(frozen=True)
class Context:
    """``base_dir`` resolves relative ``kind: local`` paths; ``index_url`` overrides PyPI."""

    cache: Cache
    transfer: Transfer
    base_dir: Path
    index_url: str | None

