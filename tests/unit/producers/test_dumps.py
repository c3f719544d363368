"""producers/dumps.py: streaming small dumps made here, in every format, and bad lines.

(The resolver's use of dumps, on recorded MusicBrainz entities, is in
tests/integration/test_producers.py.)
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contract.errors import InputUnreadable
from producers import dumps
from producers.dumps import DumpError, entity_type, iter_dump, iter_lines, open_dump, parse_line

RELEASE = {"id": "rel-1", "title": "Album", "media": [{"tracks": []}]}
RECORDING = {"id": "rec-1", "title": "Song", "length": 201000, "isrcs": ["USRC17607839"]}
LINES = [
    json.dumps(RELEASE).encode() + b"\n",  # 1
    b"\n",  # 2: blank, skipped
    json.dumps(RECORDING, ensure_ascii=False).encode() + b"\n",  # 3
    b"{not json\n",  # 4
    b"[1, 2]\n",  # 5
    b"\xff\xfe\n",  # 6
    b"  \t \r\n",  # 7: blank too
    json.dumps({"id": "x", "title": "T\u00e9"}, ensure_ascii=False).encode(),  # 8, no newline
]
DUMP = b"".join(LINES)
EXPECTED = [(1, "release"), (3, "recording"), (4, "invalid_json"), (5, "not_an_object"),
            (6, "not_utf8"), (8, "unknown")]


def kinds(items: list[tuple[int, Any]]) -> list[tuple[int, str]]:
    return [(n, x.code if isinstance(x, DumpError) else entity_type(x)) for n, x in items]


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_tar(path: Path, mode: str, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, mode) as tar:
        directory = tarfile.TarInfo("mbdump")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, payload in members:
            add_member(tar, name, payload)


OPENERS: dict[str, Callable[..., Any]] = {"": open, ".gz": gzip.open, ".xz": lzma.open,
                                          ".bz2": bz2.open}


@pytest.mark.parametrize("suffix", ["", ".json", ".gz", ".xz", ".bz2"])
def test_a_plain_or_compressed_dump_streams_every_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"recording{suffix}"
    with OPENERS.get(suffix, open)(path, "wb") as fh:
        fh.write(DUMP)
    items = list(iter_dump(path))
    assert kinds(items) == EXPECTED
    assert items[0][1] == RELEASE and items[1][1] == RECORDING
    assert items[-1][1] == {"id": "x", "title": "Té"}


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"),
                                         (".tgz", "w:gz"), (".tar.xz", "w:xz"),
                                         (".tar.bz2", "w:bz2")])
def test_a_tar_dump_skips_archive_metadata(tmp_path: Path, suffix: str, mode: str) -> None:
    path = tmp_path / f"release{suffix}"
    write_tar(path, mode, [("COPYING", b"CC0\n"), ("README", b"{}\n"),
                           ("TIMESTAMP", b"2024-06-01\n"), ("mbdump/release", DUMP)])
    assert kinds(list(iter_dump(path))) == EXPECTED


def test_a_named_tar_member_is_chosen(tmp_path: Path) -> None:
    path = tmp_path / "both.tar.xz"
    other = json.dumps(RECORDING).encode() + b"\n"
    write_tar(path, "w:xz", [("mbdump/release", DUMP), ("mbdump/recording", other)])
    assert kinds(list(iter_dump(path, member="mbdump/recording"))) == [(1, "recording")]
    assert kinds(list(iter_dump(path))) == EXPECTED  # the first data member by default


def test_a_tar_without_the_member_says_so(tmp_path: Path) -> None:
    path = tmp_path / "meta-only.tar"
    write_tar(path, "w", [("TIMESTAMP", b"2024-06-01\n")])
    with pytest.raises(InputUnreadable, match=r"holds no dump file \(it has: TIMESTAMP\)"):
        list(iter_dump(path))
    with pytest.raises(InputUnreadable, match="holds no member 'mbdump/recording'"):
        list(iter_dump(path, member="mbdump/recording"))


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_an_unreadable_path_is_a_typed_error(tmp_path: Path, make: str) -> None:
    path = tmp_path / "dump.gz"
    if make == "folder":
        path.mkdir()
    with pytest.raises(InputUnreadable) as caught, open_dump(path):
        pass
    assert caught.value.code == "input_unreadable" and "dump.gz" in caught.value.message


@pytest.mark.parametrize("start_line,first", [(0, 1), (1, 1), (2, 3), (4, 4), (8, 8), (9, None)])
def test_start_line_resumes_without_parsing_earlier_lines(start_line: int,
                                                          first: int | None) -> None:
    items = list(iter_lines(io.BytesIO(DUMP), start_line))
    expected = [(n, kind) for n, kind in EXPECTED if n >= start_line]
    assert kinds(items) == expected
    assert (items[0][0] if items else None) == first


def test_a_resume_past_the_end_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """Given a resume line beyond the dump's 8 lines (another file's cursor), expect a
    warning naming both; resuming right after the last line is a finished dump, silent."""
    assert list(iter_lines(io.BytesIO(DUMP), 9)) == []
    assert caplog.records == []
    assert list(iter_lines(io.BytesIO(DUMP), 12)) == []
    assert "resuming at line 12, but the dump has only 8 lines" in caplog.text


def test_file_identity_tells_dumps_apart_by_size_and_content(tmp_path: Path) -> None:
    path = tmp_path / "release"
    path.write_bytes(DUMP)
    first = dumps.file_identity(path)
    assert first["bytes"] == len(DUMP)
    os.utime(path, (1, 1))
    assert dumps.file_identity(path) == first  # touched or copied: the same dump
    path.write_bytes(DUMP.replace(b"rel-1", b"rel-2"))  # same size, other bytes
    assert dumps.file_identity(path) != first
    big = b"x" * (3 * dumps.IDENTITY_SAMPLE_BYTES)
    path.write_bytes(big)
    changed_tail = dumps.file_identity(path)
    path.write_bytes(big[:-1] + b"y")
    assert dumps.file_identity(path)["tail"] != changed_tail["tail"]


def test_a_line_over_the_limit_is_an_error_and_the_next_lines_still_come(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dumps, "MAX_LINE_BYTES", 64)
    long = b'{"id": "' + b"x" * 300 + b'"}\n'
    exact = b'{"id": "' + b"y" * (64 - 11) + b'"}\n'  # 63 bytes and its newline: allowed
    assert len(exact) == 64
    data = long + exact + json.dumps({"length": 1}).encode() + b"\n" + long
    items = list(iter_lines(io.BytesIO(data)))
    assert kinds(items) == [(1, "line_too_long"), (2, "unknown"), (3, "recording"),
                            (4, "line_too_long")]
    assert "longer than 64 bytes" in items[0][1].message
    # Resuming past a long line skips it without reporting it again.
    assert kinds(list(iter_lines(io.BytesIO(data), start_line=2)))[0] == (2, "unknown")


def test_the_reader_is_lazy() -> None:
    stream = io.BytesIO(DUMP + b"{never read\n" * 1000)
    it = iter_lines(stream)
    assert next(it)[0] == 1
    assert stream.tell() <= len(DUMP)


@pytest.mark.parametrize("raw,code", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),  # too deep for the parser
    (b'"a string"', "not_an_object"),
    (b"null", "not_an_object"),
    (b"3", "not_an_object"),
    (b"\xc3\x28", "not_utf8"),
])
def test_a_bad_line_is_a_dump_error_never_an_exception(raw: bytes, code: str) -> None:
    result = parse_line(7, raw)
    assert isinstance(result, DumpError)
    assert (result.line_no, result.code) == (7, code)
    assert result.message.startswith("line 7")


@pytest.mark.parametrize("entity,kind", [
    ({"media": []}, "release"),
    ({"release-group": {}}, "release"),
    ({"length": None}, "recording"),
    ({"isrcs": []}, "recording"),
    ({"first-release-date": "2001"}, "recording"),
    ({"video": False}, "recording"),
    ({"id": "a", "name": "An Artist"}, "unknown"),
])
def test_entity_type_from_its_shape(entity: dict[str, Any], kind: str) -> None:
    assert entity_type(entity) == kind


# -- corrupt, truncated or mislabelled files -----------------------------------------------
MANY = b"".join(json.dumps({**RELEASE, "id": f"rel-{n}", "pad": "x" * (n % 50)}).encode()
                + b"\n" for n in range(3000))


def read_until_error(path: Path) -> tuple[list[int], str]:
    """The line numbers yielded before the reader raised, and the error's message."""
    seen: list[int] = []
    with pytest.raises(InputUnreadable) as caught:
        for line_no, _ in iter_dump(path):
            seen.append(line_no)
    assert caught.value.code == "input_unreadable"
    return seen, caught.value.message


@pytest.mark.parametrize("suffix", [".xz", ".bz2", ".gz"])
def test_a_truncated_dump_is_unreadable_after_the_lines_it_had(tmp_path: Path,
                                                              suffix: str) -> None:
    """Given a compressed dump cut short, expect every whole line before the cut yielded,
    then "corrupt or truncated after line N" naming the last of them."""
    whole = tmp_path / f"whole{suffix}"
    extra = {"compresslevel": 1} if suffix == ".bz2" else {}  # 100 kB blocks, not one
    with OPENERS[suffix](whole, "wb", **extra) as fh:
        fh.write(MANY)
    path = tmp_path / f"release{suffix}"
    path.write_bytes(whole.read_bytes()[:-200])
    seen, message = read_until_error(path)
    assert 0 < len(seen) < 3000 and seen == list(range(1, len(seen) + 1))
    assert message.startswith(f"dump {str(path)!r} is corrupt or truncated after line "
                              f"{seen[-1]} (")


@pytest.mark.parametrize("name,payload,error", [
    ("release.xz", DUMP, "LZMAError"),  # plain text named .xz
    ("release.bz2", DUMP, "OSError"),
    ("release.gz", DUMP, "BadGzipFile"),
    ("release.tar.xz", lzma.compress(DUMP), "ReadError"),  # an .xz that holds no tar
    ("release.tar", b"", "ReadError"),  # empty
])
def test_a_mislabelled_dump_is_unreadable_before_its_first_line(
        tmp_path: Path, name: str, payload: bytes, error: str) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    seen, message = read_until_error(path)
    assert seen == []
    assert f"is corrupt or truncated after line 0 ({error}" in message


def test_a_truncated_tar_dump_is_unreadable_after_the_lines_it_had(tmp_path: Path) -> None:
    whole = tmp_path / "whole.tar.xz"
    write_tar(whole, "w:xz", [("TIMESTAMP", b"2024-06-01\n"), ("mbdump/release", MANY)])
    path = tmp_path / "release.tar.xz"
    path.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    seen, message = read_until_error(path)
    assert 0 < len(seen) < 3000 and seen == list(range(1, len(seen) + 1))
    assert f"is corrupt or truncated after line {seen[-1]} (" in message


def test_a_byte_order_mark_before_the_first_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "release.xz"
    with lzma.open(path, "wb") as fh:
        fh.write(dumps.BOM + DUMP)
    items = list(iter_dump(path))
    assert kinds(items) == EXPECTED and items[0][1] == RELEASE
    # only before the first line: elsewhere it is not JSON
    assert kinds(list(iter_lines(io.BytesIO(DUMP + b"\n" + dumps.BOM + b"{}\n"))))[-1] == (
        9, "invalid_json")
