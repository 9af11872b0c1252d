"""``kind: local`` — a file already on disk (placed by hand where the host is unreachable).

Registry keys: ``path`` (absolute, or relative to the ``base_dir`` given to fetch), ``sha256``
and optional ``size``. The file is verified in place, not copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pipeline.errors import PosezooError
from pipeline.fetch import fields
from pipeline.fetch.checksum import RecordKey
from pipeline.fetch.context import Context


def fetch_local(source: Mapping[str, Any], ctx: Context) -> Path:
    """Return the verified local file ``source`` names."""
    raw = Path(fields.text(source, "path")).expanduser()
    path = raw if raw.is_absolute() else ctx.base_dir / raw
    if not path.is_file():
        raise PosezooError(
            f"{path}: no such file; put the file there or fix `path` in the registry "
            f"(relative paths are resolved against {ctx.base_dir})"
        )
    expected = ctx.cache.expectation(RecordKey(path.resolve().as_uri()),
                                     fields.sha256(source, "sha256"), fields.size(source, "size"))
    ctx.cache.verify(path, expected, label=str(path),
                     problem="this is not the file the registry describes — replace it with the "
                             "right one")
    return path
