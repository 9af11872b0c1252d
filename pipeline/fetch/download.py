"""Resumable HTTP(S) downloads with retries, for flaky connections and large model files.

A download goes to a ``.part`` file that survives failures: the next attempt (or the next run)
asks for the rest with ``Range: bytes=N-`` and appends when the server answers 206, or starts
over when it answers 200. Only the standard library is used so fetching needs no extra wheels.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from pipeline import __version__
from pipeline.errors import PosezooError

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
_USER_AGENT = f"posezoo/{__version__} (+urllib)"
#: HTTP statuses worth retrying: server-side trouble and rate limiting; other 4xx are final.
_TRANSIENT_HTTP = frozenset({408, 425, 429})
#: Offered whenever the host cannot be reached: the sandboxes this runs in often lack internet.
_OFFLINE_HINT = (
    "download the file elsewhere and put it in a directory named by POSEZOO_MIRROR (README, "
    "\"Offline use\")"
)


@dataclass(frozen=True)
class Transfer:
    """How hard to try: ``retries`` after the first attempt, waiting ``backoff_s`` * 2**n
    between attempts, with ``timeout_s`` on every socket operation."""

    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix; ``str()`` says how."""


class _Truncated(_Retry):
    """The body ended before the announced length (the ``.part`` file keeps what arrived)."""

    def __init__(self, received: int, total: int) -> None:
        super().__init__(f"received {received} of {total} bytes")
        self.received = received
        self.total = total


def download(url: str, part: Path, transfer: Transfer) -> None:
    """Make ``part`` a complete copy of ``url``, resuming from the bytes it already holds.

    Completeness is judged by the server's announced length; the caller verifies the content.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    attempts = max(transfer.retries, 0) + 1
    for attempt in range(1, attempts + 1):
        try:
            _attempt(url, part, transfer.timeout_s)
            return
        except _Retry as failure:
            last = failure
            if attempt < attempts:
                delay = transfer.backoff_s * 2 ** (attempt - 1)
                log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)",
                            url, failure, delay, attempt + 1, attempts)
                time.sleep(delay)
    tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
    if isinstance(last, _Truncated):
        raise PosezooError(
            f"{url}: received {last.received} of {last.total} bytes after {tries}; "
            f"check the connection and rerun (partial file kept for resume at {part})"
        )
    raise PosezooError(f"{url}: download failed after {tries} ({last}); this machine "
                       f"may not reach the host — {_OFFLINE_HINT}")


def _attempt(url: str, part: Path, timeout_s: float) -> None:
    """One request: append to or restart ``part``; raise :class:`_Retry` if it fell short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout_s)
    except urllib.error.HTTPError as err:
        with err:
            _http_error(url, err, part, offset)
        return
    except OSError as err:  # URLError (refused, DNS), timeouts, resets
        raise _Retry(str(getattr(err, "reason", err))) from err
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start} instead of {offset}; restarting")
            log.info("resuming %s at byte %d", url, offset)
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignores resume requests; downloading from the start", url)
            log.info("downloading %s", url)
            length = response.headers.get("Content-Length")
            mode, offset, total = "wb", 0, int(length) if length and length.isdigit() else None
        with part.open(mode) as out:
            interruption = _stream(response, out, offset, total, part.name.removesuffix(".part"))
    received = part.stat().st_size
    if total is not None and received < total:
        raise _Truncated(received, total)
    if total is not None and received > total:
        part.unlink()
        raise _Retry(f"received {received} bytes, more than the announced {total}; restarting")
    if interruption:
        raise _Retry(interruption)


def _stream(response: http.client.HTTPResponse, out: IO[bytes], offset: int, total: int | None,
            name: str) -> str:
    """Copy the body to ``out`` with a progress bar; return why it stopped early ("" if not)."""
    with tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
              desc=name, leave=False, disable=None) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as err:  # not around write: disk full
                return f"connection lost ({err or type(err).__name__})"  # is no network issue
            if not chunk:
                return ""
            out.write(chunk)
            bar.update(len(chunk))


def _http_error(url: str, err: urllib.error.HTTPError, part: Path, offset: int) -> None:
    """Turn an HTTP error status into a retry, a final error, or (416 on a full file) success."""
    if err.code == 416 and offset:
        # A previous run got every byte but stopped before verifying: nothing left to fetch.
        if err.headers.get("Content-Range", "") == f"bytes */{offset}":
            return
        part.unlink()
        raise _Retry("server refused to resume (HTTP 416); restarting")
    if err.code >= 500 or err.code in _TRANSIENT_HTTP:
        raise _Retry(f"HTTP {err.code} {err.reason}")
    raise PosezooError(
        f"{url}: HTTP {err.code} {err.reason}; check `url` in the registry, or if this machine "
        f"cannot reach the host, {_OFFLINE_HINT}"
    )


def _content_range(value: str) -> tuple[int, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); an unknown total (``/*``) -> None."""
    try:
        unit, _, spec = value.partition(" ")
        span, _, total = spec.partition("/")
        if unit != "bytes":
            raise ValueError(unit)
        return int(span.split("-")[0]), None if total == "*" else int(total)
    except ValueError as err:
        raise _Retry(f"unreadable Content-Range {value!r}") from err
