"""Streaming readers for MusicBrainz JSON dumps (one JSON entity per line).

The MusicBrainz JSON dumps ship as ``<entity>.tar.xz`` archives holding ``mbdump/<entity>``
(one JSON document per line); extracted files may be plain or re-compressed. This reader
accepts plain files, ``.gz``, ``.xz``, ``.bz2`` and tar archives of those (``.tar``,
``.tar.xz``, ``.tar.gz``, ``.tar.bz2``), all through the standard library, reading line by
line: memory stays bounded by the longest line whatever the dump size. A UTF-8 byte order
mark before the first line is dropped (some tools write one; catalogs tolerate it too).

A file that cannot be decompressed or unpacked (truncated, corrupt, or named for a format
it is not in) is :class:`~contract.errors.InputUnreadable` "dump … is corrupt or truncated
after line N", raised after lines 1..N were yielded, so what was read is not lost; an
archive holding no dump file says so.

:func:`iter_dump` yields ``(line_number, item)`` where ``item`` is the decoded entity
``dict`` or a :class:`DumpError` for a bad line (never an exception), so a corrupt line
cannot stop a multi-hour import. ``start_line`` resumes: lines before it are skipped
without being parsed.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import logging
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from contract.errors import InputUnreadable

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 50_000_000  # one release with thousands of tracks is a few MB
BOM = b"\xef\xbb\xbf"
# What a decompressor or tar reader raises on a truncated, corrupt or mislabelled file:
# truncated xz/bz2/gzip (EOFError), not xz (LZMAError), not bzip2 or gzip (OSError),
# corrupt deflate data (zlib.error), a broken tar header (TarError).
_READ_ERRORS = (EOFError, lzma.LZMAError, OSError, zlib.error, tarfile.TarError)
_METADATA_FILES = frozenset({"COPYING", "README", "SCHEMA_SEQUENCE", "TIMESTAMP",
                             "REPLICATION_SEQUENCE", "JSON_DUMPS_SCHEMA_NUMBER"})


@dataclass(frozen=True)
class DumpError:
    """A line that is not one JSON object."""

    line_no: int
    code: str  # "invalid_json" | "not_an_object" | "not_utf8" | "line_too_long"
    message: str


def _open_compressed(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith((".gz", ".tgz")):
        return gzip.open(path, "rb")
    if name.endswith((".xz", ".txz")):
        return lzma.open(path, "rb")
    if name.endswith((".bz2", ".tbz2")):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _is_tar(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz",
                                          ".tar.bz2", ".tbz2"))


@contextmanager
def open_dump(path: str | Path, member: str | None = None) -> Iterator[IO[bytes]]:
    """A binary stream of the dump's lines. For a tar archive: the member named
    ``member`` (e.g. ``mbdump/recording``), else the first regular file that is not
    archive metadata (COPYING, README, TIMESTAMP, ...). Tar archives are read in
    streaming mode (no seeking, nothing extracted to disk)."""
    path = Path(path)
    try:  # a missing, unreadable or folder path: the user's to fix, say so plainly
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputUnreadable(f"cannot read dump {str(path)!r}: "
                              f"{exc.strerror or type(exc).__name__}") from None
    if not _is_tar(path):
        with _open_compressed(path) as fh:
            yield fh
        return
    with _open_compressed(path) as raw, _open_tar(path, raw) as tar:
        found = names = None
        try:
            names = []
            for info in tar:
                if not info.isfile():
                    continue
                base = info.name.rsplit("/", 1)[-1]
                names.append(info.name)
                if member is not None:
                    if info.name != member:
                        continue
                elif base.upper() in _METADATA_FILES:
                    continue
                found = tar.extractfile(info)
                break
        except _READ_ERRORS as exc:
            raise InputUnreadable(_corrupt(f"dump {str(path)!r}", 0, exc)) from None
        if found is None:
            what = f"no member {member!r}" if member else "no dump file"
            listed = ", ".join(names[:10]) if names else "no file at all"
            raise InputUnreadable(f"dump {str(path)!r} holds {what} (it has: {listed}); "
                                  f"the MusicBrainz JSON dumps keep it in mbdump/<entity>")
        with found:
            yield found


@contextmanager
def _open_tar(path: Path, raw: IO[bytes]) -> Iterator[tarfile.TarFile]:
    try:  # the first read: a mislabelled or empty file fails here
        tar = tarfile.open(fileobj=raw, mode="r|")  # noqa: SIM115 - closed by the with below
    except _READ_ERRORS as exc:
        raise InputUnreadable(_corrupt(f"dump {str(path)!r}", 0, exc)) from None
    with tar:
        yield tar


def _corrupt(name: str, line_no: int, exc: BaseException) -> str:
    return f"{name} is corrupt or truncated after line {line_no} ({type(exc).__name__}: {exc})"


def iter_dump(path: str | Path, start_line: int = 0, *, member: str | None = None,
              keep: Callable[[int], bool] | None = None
              ) -> Iterator[tuple[int, dict[str, Any] | DumpError]]:
    """Lazily yield ``(line_no, entity_dict | DumpError)``; ``line_no`` is 1-based.

    Lines with ``line_no < start_line`` are skipped unparsed (resume after a crash by
    passing the last line number you finished + 1). Blank lines are skipped, and so are
    lines for which ``keep(line_no)`` is false, unparsed (a pass of a coverage plan).
    """
    with open_dump(path, member) as fh:
        yield from iter_lines(fh, start_line, keep=keep, name=f"dump {str(path)!r}")


def binary_at(head: bytes) -> int | None:
    """Where the first bytes of a file stop being UTF-8 text (a NUL, or bytes UTF-8 cannot
    hold), or None; a character cut by the end of ``head`` is not binary."""
    if (nul := head.find(b"\0")) >= 0:
        return nul
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return exc.start
    return None


def iter_lines(fh: IO[bytes], start_line: int = 0, *,
               keep: Callable[[int], bool] | None = None, name: str = "dump"
               ) -> Iterator[tuple[int, dict[str, Any] | DumpError]]:
    """:func:`iter_dump` over an already-open binary stream (``name`` in messages)."""
    line_no = whole = 0  # lines begun, lines read to their end
    try:
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            line_no += 1
            if line_no == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            if line_no == 1 and (bad := binary_at(raw[:4096])) is not None:
                # An audio file or an archive we do not read: thousands of "unresolved"
                # lines otherwise.
                raise InputUnreadable(f"{name} is not UTF-8 text (binary data at byte "
                                      f"{bad}): a dump is JSON Lines")
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # drain the rest of the long line
                    raw = fh.readline(MAX_LINE_BYTES)
                whole = line_no
                if line_no >= start_line and (keep is None or keep(line_no)):
                    yield line_no, DumpError(line_no, "line_too_long",
                                             f"line {line_no} longer than {MAX_LINE_BYTES} bytes")
                continue
            whole = line_no
            if line_no < start_line or (keep is not None and not keep(line_no)):
                continue
            if raw.strip():
                yield line_no, parse_line(line_no, raw)
    except _READ_ERRORS as exc:  # lines up to `whole` were yielded: nothing read is lost
        raise InputUnreadable(_corrupt(name, whole, exc)) from None
    if start_line > line_no + 1:  # a cursor of another (longer) file, or a typo
        log.warning("resuming at line %d, but the dump has only %d lines: nothing "
                    "was read (--restart starts over)", start_line, line_no)


def parse_line(line_no: int, raw: bytes) -> dict[str, Any] | DumpError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DumpError(line_no, "not_utf8", f"line {line_no}: not UTF-8 ({exc})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return DumpError(line_no, "invalid_json", f"line {line_no}: invalid JSON ({exc})")
    if not isinstance(data, dict):
        return DumpError(line_no, "not_an_object",
                         f"line {line_no}: expected a JSON object, got {type(data).__name__}")
    return data


IDENTITY_SAMPLE_BYTES = 1 << 20


def file_identity(path: str | Path) -> dict[str, int | str]:
    """What tells one dump file from another at the same path: its size and SHA-256
    hashes of its first and last MiB (two reads of 1 MiB whatever the size).

    Not the mtime: a copy or a re-download of the same dump changes it, and the resume
    it would refuse is right; a different dump differs in size or in those bytes (the
    compressed ones all the more)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = hashlib.sha256(fh.read(IDENTITY_SAMPLE_BYTES)).hexdigest()[:32]
            fh.seek(max(0, size - IDENTITY_SAMPLE_BYTES))
            tail = hashlib.sha256(fh.read(IDENTITY_SAMPLE_BYTES)).hexdigest()[:32]
    except OSError as exc:
        raise InputUnreadable(f"cannot read dump {str(path)!r}: "
                              f"{exc.strerror or type(exc).__name__}") from None
    return {"bytes": size, "head": head, "tail": tail}


def entity_type(entity: dict[str, Any]) -> str:
    """``"release"`` or ``"recording"`` (or ``"unknown"``) from the entity's shape."""
    if "media" in entity or "release-group" in entity:
        return "release"
    if "length" in entity or "isrcs" in entity or "first-release-date" in entity \
            or "video" in entity:
        return "recording"
    return "unknown"
