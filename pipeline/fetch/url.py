"""``kind: url`` — a file on an HTTP(S) server, or one ``member`` of an archive there.

Registry keys: ``url``, ``sha256`` (may be empty: recorded at first download), optional
``size``, optional ``member`` (then ``sha256``/``size`` describe the member) and
``archive_sha256`` (pins the downloaded archive itself).
"""

from __future__ import annotations

import posixpath
import urllib.parse
from pathlib import Path
from typing import Any, Mapping

from pipeline.fetch import fields
from pipeline.fetch.checksum import RecordKey
from pipeline.fetch.context import Context
from pipeline.fetch.download import download
from pipeline.fetch.member import archive_expectation, fetch_member


def url_filename(url: str) -> str:
    """The last path segment of ``url`` (unquoted): the cached file's name and extension."""
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return name or "download"


def fetch_url(source: Mapping[str, Any], ctx: Context) -> Path:
    """Download (or find in the cache) the file or archive member ``source`` describes."""
    url = fields.text(source, "url")
    member = fields.optional_text(source, "member")
    expected = ctx.cache.expectation(RecordKey(url, member), fields.sha256(source, "sha256"),
                                     fields.size(source, "size"))

    def produce(part: Path) -> None:
        download(url, part, ctx.transfer)

    if not member:
        return ctx.cache.obtain(url, url_filename(url), expected, label=url, produce=produce)
    archive_sha256 = fields.sha256(source, "archive_sha256")
    return fetch_member(
        ctx.cache, member, expected,
        archive=lambda: ctx.cache.obtain(
            url, url_filename(url), archive_expectation(archive_sha256, "archive_sha256"),
            label=url, produce=produce,
        ),
        archive_label=url,
    )
