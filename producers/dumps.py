"""Streaming readers for MusicBrainz JSON dumps (one JSON entity per line).

The MusicBrainz JSON dumps ship as ``<entity>.tar.xz`` archives holding ``mbdump/<entity>``
(one JSON document per line); extracted files may be plain or re-compressed. This reader
accepts plain files, ``.gz``, ``.xz``, ``.bz2`` and tar archives of those (``.tar``,
``.tar.xz``, ``.tar.gz``, ``.tar.bz2``), all through the standard library, reading line by
line: memory stays bounded by the longest line whatever the dump size.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from contract.errors import InputUnreadable

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 50_000_000  # one release with thousands of tracks is a few MB
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
    with _open_compressed(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        found = None
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            if member is not None:
                if info.name != member:
                    continue
            elif base.upper() in _METADATA_FILES:
                continue
            found = tar.extractfile(info)
            break
        if found is None:
            raise FileNotFoundError(f"{path}: no dump member found"
                                    + (f" named {member!r}" if member else ""))
        with found:
            yield found


def iter_dump(path: str | Path, start_line: int = 0, *, member: str | None = None,
              keep: Callable[[int], bool] | None = None
              ) -> Iterator[tuple[int, dict[str, Any] | DumpError]]:
    """Lazily yield ``(line_no, entity_dict | DumpError)``; ``line_no`` is 1-based.

    Lines with ``line_no < start_line`` are skipped unparsed (resume after a crash by
    passing the last line number you finished + 1). Blank lines are skipped, and so are
    lines for which ``keep(line_no)`` is false, unparsed (a pass of a coverage plan).
    """
    with open_dump(path, member) as fh:
        yield from iter_lines(fh, start_line, keep=keep)


def iter_lines(fh: IO[bytes], start_line: int = 0, *,
               keep: Callable[[int], bool] | None = None
               ) -> Iterator[tuple[int, dict[str, Any] | DumpError]]:
    """:func:`iter_dump` over an already-open binary stream."""
    reader = fh
    line_no = 0
    while True:
        raw = reader.readline(MAX_LINE_BYTES + 1)
        if not raw:
            if start_line > line_no + 1:  # a cursor of another (longer) file, or a typo
                log.warning("resuming at line %d, but the dump has only %d lines: nothing "
                            "was read (--restart starts over)", start_line, line_no)
            return
        line_no += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # drain the rest of the long line
                raw = reader.readline(MAX_LINE_BYTES)
            if line_no >= start_line and (keep is None or keep(line_no)):
                yield line_no, DumpError(line_no, "line_too_long",
                                         f"line {line_no} longer than {MAX_LINE_BYTES} bytes")
            continue
        if line_no < start_line or (keep is not None and not keep(line_no)):
            continue
        if raw.strip():
            yield line_no, parse_line(line_no, raw)


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
