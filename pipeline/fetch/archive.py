"""Safe extraction of one member from zip and tar(.gz) archives (also wheels and sdists).

Archives come from the internet, so a member (or a link on the way to it) with an absolute
path, ``..`` components, a link pointing outside the archive or a device file is refused with
an error naming the archive and the member, before anything is written. Links inside the
archive are allowed; :func:`extract_member` follows them, by name within the archive (never
through the file system), to the file they name and writes only that file's bytes.

Both formats are first turned into a neutral list of :class:`_Entry`, so the safety rules are
written once.
"""

from __future__ import annotations

import abc
import contextlib
import difflib
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator

from pipeline.atomic import atomic_path
from pipeline.errors import PosezooError

#: Links followed by :func:`extract_member` before giving up (a loop inside the archive).
_MAX_LINK_HOPS = 16
_CHUNK = 1 << 20
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError)


@dataclass(frozen=True)
class _Entry:
    """One archive member: ``kind`` is file, dir, symlink, hardlink or special (devices, FIFOs).

    ``name`` is normalized (no ``./``, no trailing ``/``); ``raw`` is the name as stored, for
    error messages. ``target`` is a symlink's target (relative to the link's directory) or a
    hardlink's target (relative to the archive root).
    """

    raw: str
    name: str
    kind: str
    target: str = ""
    handle: Any = None  # the ZipInfo / TarInfo to read the content from


class _Archive(abc.ABC):
    """An open zip or tar: its entries, and the content of its regular files."""

    def __init__(self, path: Path, label: str) -> None:
        self.path, self.label = path, label

    @abc.abstractmethod
    def entries(self) -> list[_Entry]:
        """Every member, in archive order."""

    @abc.abstractmethod
    def _open(self, entry: _Entry) -> IO[bytes]:
        """A reader for the regular file ``entry``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the underlying file."""

    def copy(self, entry: _Entry, dest: Path) -> None:
        """Write the content of the regular file ``entry`` to ``dest``.

        Only reading is guarded: a failing write (disk full) is not the archive's fault.
        """
        with self._reading():
            src = self._open(entry)
        with src, dest.open("wb") as out:
            while True:
                with self._reading():
                    chunk = src.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except _CORRUPT as err:
            raise PosezooError(
                f"{self.label}: the archive is corrupt ({err}); delete {self.path} and retry"
            ) from err

    def refuse(self, entry_name: str, reason: str) -> PosezooError:
        return PosezooError(
            f"{self.label}: refusing to extract member {entry_name!r}: {reason}; the archive is "
            "unsafe — do not extract it by hand, check the source in the registry"
        )


class _Zip(_Archive):
    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        self._zip = zipfile.ZipFile(path)

    def entries(self) -> list[_Entry]:
        with self._reading():
            return [_zip_entry(self._zip, info) for info in self._zip.infolist()]

    def _open(self, entry: _Entry) -> IO[bytes]:
        return self._zip.open(entry.handle)

    def close(self) -> None:
        self._zip.close()


class _Tar(_Archive):
    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        self._tar = tarfile.open(path)

    def entries(self) -> list[_Entry]:
        with self._reading():
            return [_tar_entry(info) for info in self._tar]

    def _open(self, entry: _Entry) -> IO[bytes]:
        src = self._tar.extractfile(entry.handle)
        assert src is not None, "only regular files are opened"
        return src

    def close(self) -> None:
        self._tar.close()


def _open_archive(path: Path, label: str) -> _Archive:
    """Open ``path`` by content, not by name: cached files may lack a telling extension."""
    try:
        return _Zip(path, label) if zipfile.is_zipfile(path) else _Tar(path, label)
    except _CORRUPT as err:
        raise PosezooError(
            f"{label}: not a zip or readable tar archive; delete {path} and retry, or check "
            "that the registry entry points at an archive"
        ) from err


def _normalize(name: str) -> str:
    """``./a//b/`` -> ``a/b``; the root entry of a ``tar c .`` becomes ``.``."""
    return posixpath.normpath(name.replace("\\", "/")) if name.strip("/") else "."


def _zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Entry:
    mode = info.external_attr >> 16
    if info.is_dir():
        kind = "dir"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
    elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
        kind = "file"
    else:
        kind = "special"
    target = archive.read(info).decode("utf-8", "replace") if kind == "symlink" else ""
    return _Entry(info.filename, _normalize(info.filename), kind, target, info)


def _tar_entry(info: tarfile.TarInfo) -> _Entry:
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    else:
        kind = "special"
    return _Entry(info.name, _normalize(info.name), kind, info.linkname, info)


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name))


def _escapes(name: str) -> bool:
    """True when ``name`` (relative to the destination root) leaves the root."""
    return _is_absolute(name) or _normalize(name).split("/")[0] == ".."


def _link_target(entry: _Entry) -> str:
    """The archive path a link points to, relative to the archive root (may start with ..)."""
    if entry.kind == "hardlink":
        return entry.target
    return posixpath.join(posixpath.dirname(entry.name), entry.target.replace("\\", "/"))


def _check(archive: _Archive, entry: _Entry) -> None:
    """Refuse ``entry`` if extracting it could touch anything outside the destination."""
    if _is_absolute(entry.raw):
        raise archive.refuse(entry.raw, "absolute path")
    if ".." in re.split(r"[/\\]", entry.raw):
        raise archive.refuse(entry.raw, "'..' in its path escapes the destination")
    if entry.kind == "special":
        raise archive.refuse(entry.raw, "device or special file")
    if entry.kind in ("symlink", "hardlink") and (
        _is_absolute(entry.target) or _escapes(_link_target(entry))
    ):
        raise archive.refuse(entry.raw, f"{entry.kind} points outside the archive "
                                        f"(-> {entry.target})")


def _suggestions(member: str, entries: list[_Entry]) -> str:
    """Up to five file names a mistyped ``member`` probably meant (same basename first)."""
    files = [e.name for e in entries if e.kind != "dir"]
    base = PurePosixPath(member).name
    alike = [n for n in files if PurePosixPath(n).name == base]
    alike = alike or difflib.get_close_matches(member, files, n=5, cutoff=0.6) or files
    return ", ".join(alike[:5])


def extract_member(archive: Path, member: str, dest: Path, *, label: str | None = None) -> Path:
    """Write the file ``member`` of ``archive`` to ``dest`` (atomically) and return ``dest``.

    Links inside the archive are followed, so ``dest`` is always a regular file. ``label``
    names the archive in errors (e.g. its URL); it defaults to the archive path.
    """
    opened = _open_archive(Path(archive), label or str(archive))
    try:
        entries = opened.entries()
        by_name = {e.name: e for e in entries}
        wanted = _normalize(member)
        entry = by_name.get(wanted)
        if entry is None:
            if _escapes(member):
                raise opened.refuse(member, "the registry `member` points outside the archive")
            raise PosezooError(
                f"{opened.label}: has no member {member}; check `member` in the registry "
                f"(members like it: {_suggestions(wanted, entries) or 'the archive is empty'})"
            )
        for _ in range(_MAX_LINK_HOPS):
            _check(opened, entry)
            if entry.kind not in ("symlink", "hardlink"):
                break
            target = by_name.get(_normalize(_link_target(entry)))
            if target is None:
                raise PosezooError(f"{opened.label}: member {entry.raw} is a {entry.kind} to "
                                   f"{entry.target}, which is not in the archive; check `member`")
            entry = target
        if entry.kind != "file":
            raise PosezooError(f"{opened.label}: member {member} is not a regular file "
                               f"({entry.kind}); check `member` in the registry")
        with atomic_path(dest) as tmp:
            opened.copy(entry, tmp)
        return Path(dest)
    finally:
        opened.close()
