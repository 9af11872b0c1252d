"""The download cache: content-addressed, outside the work tree, shared by every checkout.

Layout under :func:`cache_root`::

    blobs/sha256/<hex>/<name>    verified files, keyed by content (the name keeps the extension
                                 that converters look at)
    downloads/<key-hash>/<name>  unpinned archives (only their member is verified),
                                 ``.part`` files of interrupted downloads and ``.lock`` files,
                                 keyed by source
    tmp/                         extraction scratch space (same filesystem, so moves are atomic)
    recorded-sha256.json         digests of unpinned sources, recorded at first download

On a miss, the offline mirror (:mod:`pipeline.fetch.mirror`, ``$POSEZOO_MIRROR``) is searched
before anything is downloaded; a file taken from it is verified like a download.

Nothing is ever written to a final path directly: files are completed beside it and moved
into place with :func:`os.replace`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pipeline.atomic import write_json
from pipeline.errors import PosezooError
from pipeline.fetch.checksum import Expectation, RecordKey, check, is_sha256
from pipeline.fetch.mirror import MIRROR_PROBLEM, Mirror

log = logging.getLogger(__name__)

#: What a digest mismatch right after a download means, and the first thing to try.
DOWNLOAD_PROBLEM = (
    "the download is corrupt or the source changed — rerun to download it again "
    "(the bad copy was deleted)"
)


def cache_root() -> Path:
    """``$POSEZOO_CACHE``, else ``$XDG_CACHE_HOME/posezoo``, else ``~/.cache/posezoo``.

    Outside the work tree on purpose: models are hundreds of MB and must survive ``git clean``
    and be shared between checkouts.
    """
    explicit = os.environ.get("POSEZOO_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "posezoo"


@dataclass(frozen=True)
class Cache:
    """One cache directory (and the offline mirror searched on a miss); see the module docstring."""

    root: Path
    mirror: Mirror = field(default_factory=lambda: Mirror(()), compare=False)

    @property
    def records_path(self) -> Path:
        return self.root / "recorded-sha256.json"

    def blob_path(self, sha256: str, name: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256 / name

    def keyed_path(self, key: str, name: str) -> Path:
        """A per-source path for content whose digest is not known before it is downloaded."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        return self.root / "downloads" / digest / name

    @contextlib.contextmanager
    def scratch_dir(self) -> Iterator[Path]:
        """A temporary directory inside the cache, removed afterwards."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root / "tmp") as tmp:
            yield Path(tmp)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        """Hold an exclusive lock on ``path``.lock, so parallel stages (``dvc exp run -j``)
        neither append to the same ``.part`` file nor lose each other's recorded digests."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- recorded digests of unpinned sources --------------------------------------------------

    def _records(self) -> dict[str, dict[str, str]]:
        try:
            records = json.loads(self.records_path.read_text("utf-8"))
            if not isinstance(records, dict):
                raise ValueError("not a JSON object")
            return records
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as err:
            raise PosezooError(
                f"{self.records_path}: cannot read recorded sha256 values ({err}); fix or delete "
                "the file (unpinned sources are then recorded again at their next download)"
            ) from err

    def expectation(self, key: RecordKey, sha256: str, size: int | None) -> Expectation:
        """The expectation for a source: the registry pin, else its recorded digest, else none.

        With neither, the returned expectation asks :meth:`verify` to record the digest.
        """
        if sha256:
            return Expectation(sha256, size)
        recorded = self._records().get(key.origin, {}).get(key.member, "")
        if is_sha256(recorded):
            log.info("%s%s: no sha256 in the registry; verifying against the one recorded in %s",
                     key.origin, f" member {key.member}" if key.member else "", self.records_path)
            return Expectation(
                recorded,
                size,
                origin=f"the first download (recorded in {self.records_path}) had",
                fix=(
                    f"if the change is expected, delete its entry from {self.records_path} and "
                    "pin the new sha256 in the registry"
                ),
            )
        return Expectation("", size, record_as=key)

    def _record(self, key: RecordKey, digest: str, label: str) -> None:
        with self._locked(self.records_path):
            records = self._records()
            records.setdefault(key.origin, {})[key.member] = digest
            write_json(self.records_path, records)
        log.warning(
            "%s: the registry has no sha256; recorded sha256 %s in %s — pin it in the registry "
            "entry (sha256: %s) so every machine verifies the same bytes",
            label, digest, self.records_path, digest,
        )

    # -- verified content ------------------------------------------------------------------------

    def cached(self, expected: Expectation, name: str) -> Path | None:
        """The verified cache entry for ``expected``, or None (a corrupt entry is deleted)."""
        if not expected.sha256:
            return None
        path = self.blob_path(expected.sha256, name)
        if not path.is_file():
            return None
        try:
            check(path, expected, label=str(path), problem="corrupt cache entry")
        except PosezooError:
            log.warning("cache entry %s failed verification; deleting it and fetching again", path)
            path.unlink()
            return None
        log.info("cache hit: %s", path)
        return path

    def verify(self, path: Path, expected: Expectation, *, label: str, problem: str) -> str:
        """Check ``path`` and, for an unpinned source, record its digest; return the digest."""
        digest = check(path, expected, label=label, problem=problem)
        if expected.record_as is not None:
            self._record(expected.record_as, digest, label)
        return digest

    def admit(self, candidate: Path, expected: Expectation, name: str, *, label: str,
              problem: str) -> Path:
        """Verify ``candidate`` (a file inside the cache) and move it to its blob path.

        A candidate that fails is deleted, so a bad download is never picked up later.
        """
        try:
            digest = self.verify(candidate, expected, label=label, problem=problem)
        except PosezooError:
            candidate.unlink(missing_ok=True)
            raise
        final = self.blob_path(digest, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(candidate, final)
        log.info("stored %s", final)
        return final

    def from_mirror(self, found: Path, expected: Expectation, name: str) -> Path:
        """Copy the mirror file ``found`` into the cache, verified against ``expected``."""
        log.info("using the mirror copy %s", found)
        with self.scratch_dir() as tmp:
            copy = tmp / name
            shutil.copyfile(found, copy)
            return self.admit(copy, expected, name, label=str(found), problem=MIRROR_PROBLEM)

    def obtain(self, key: str, name: str, expected: Expectation | None, *, label: str,
               produce: Callable[[Path], None]) -> Path:
        """A cached file that ``produce(part_path)`` creates on a miss (a download, a pip run...).

        With an expectation the file is verified and content-addressed. With None it is cached
        under ``key`` unverified: that is for archives whose member carries the real pin, so a
        repackaged archive with an unchanged member is still accepted. A mirror copy (by content
        or by ``name``) replaces ``produce``.
        """
        final = self.keyed_path(key, name)
        with self._locked(final):
            if expected is None:
                if final.is_file():
                    log.info("cache hit: %s (archive not pinned; its member is verified)", final)
                    return final
            elif hit := self.cached(expected, name):
                return hit
            part = final.with_name(name + ".part")
            found = self.mirror.find(name, expected)
            if found is not None and expected is not None:
                return self.from_mirror(found, expected, name)
            if found is not None:
                log.info("using the mirror copy %s (archive not pinned; its member is verified)", found)
                shutil.copyfile(found, part)
            else:
                produce(part)
            if expected is None:
                os.replace(part, final)
                return final
            return self.admit(part, expected, name, label=label, problem=DOWNLOAD_PROBLEM)
