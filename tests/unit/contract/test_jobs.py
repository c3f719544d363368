"""The job contract: validation, JSON round trips, catalog streaming, schema kept in sync."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.errors import PreviewvecError
from contract.jobs import (
    ISRC_PATTERN,
    JOB_FIELDS,
    JOB_SCHEMA,
    MAX_CATALOG_LINE_CHARS,
    TOKEN_PATTERN,
    InvalidJob,
    Job,
    parse_catalog,
    parse_isrc,
    vector_id,
)

MBID = "b1a9c0e9-d987-4042-ae91-78d6a3267d69"
URL = "https://audio-ssl.itunes.apple.com/itunes-assets/AudioPreview/a/b/c.m4a"
VALIDATOR = jsonschema.Draft202012Validator(JOB_SCHEMA)


def job(**fields: Any) -> dict[str, Any]:
    return {"recording_id": MBID, "preview_url": URL, **fields}


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(JOB_SCHEMA)
    assert list(JOB_SCHEMA["properties"]) == list(JOB_FIELDS)


# --------------------------------------------------------------------------- cases
# Every case is checked against both the code and JOB_SCHEMA, so they cannot drift apart.

GOOD: list[dict[str, Any]] = [
    job(),
    job(
        isrc="USRC17607839",
        artist="Artist",
        title="Title",
        duration_ms=215_000,
        release_id="f5093c06-23e3-404f-aeaa-40f72885ee3a",
        source="itunes",
        run_id="2024-06-01.run_1",
        force=True,
    ),
    job(recording_id="Björk–Jóga ♫ 🎵"),  # any Unicode but controls and "/"
    job(recording_id="é" * 32),  # exactly 64 bytes
    job(recording_id="a" * 64),
    job(recording_id="itunes:1440833098"),
    job(recording_id=".hidden"),
    job(isrc="us-rc1-76-07839"),  # normalised
    job(duration_ms=1000.0),  # JSON Schema's integer includes 1000.0
    job(isrc=None, artist=None, force=None),  # null means absent
    job(artist="", title="x" * 512),
    job(preview_url="http://[2001:db8::1]:8080/a.m4a"),
    job(preview_url="https://bücher.example/a.m4a?x=1&y=2#t=3"),
    job(preview_url="HTTPS://P.SCDN.CO/mp3-preview/abc"),
    job(preview_url="http://host:8080"),
    job(preview_url="http://host/a@b"),  # "@" in the path is not userinfo
]

BAD: list[tuple[str | None, Any]] = [  # (field InvalidJob names, input)
    ("recording_id", job(recording_id="a" * 65)),  # 65 bytes
    ("recording_id", job(recording_id="")),
    ("recording_id", job(recording_id="a/b")),
    ("recording_id", job(recording_id="a\nb")),
    ("recording_id", job(recording_id="a\x00b")),
    ("recording_id", job(recording_id="a\x85b")),  # C1 control
    ("recording_id", job(recording_id="..")),
    ("recording_id", job(recording_id=".")),
    ("recording_id", job(recording_id=123)),
    ("recording_id", {"preview_url": URL}),
    ("preview_url", {"recording_id": MBID}),
    ("preview_url", job(preview_url="file:///etc/passwd")),
    ("preview_url", job(preview_url="gopher://example.com:70/_x")),
    ("preview_url", job(preview_url="ftp://example.com/a.m4a")),
    ("preview_url", job(preview_url="javascript:alert(1)")),
    ("preview_url", job(preview_url="//example.com/a.m4a")),
    ("preview_url", job(preview_url="http:///a.m4a")),
    ("preview_url", job(preview_url="http://:80/a.m4a")),
    ("preview_url", job(preview_url="https://user:pw@example.com/a.m4a")),
    ("preview_url", job(preview_url="https://user@example.com/a.m4a")),
    ("preview_url", job(preview_url="https://example.com/a b.m4a")),
    ("preview_url", job(preview_url="https://example.com\\@evil.com/")),
    ("preview_url", job(preview_url="https://example.com/\n")),
    ("preview_url", job(preview_url="https://example.com:port/")),
    ("preview_url", job(preview_url="https://[zz::1]/")),
    ("preview_url", job(preview_url="https://example.com/" + "a" * 2030)),
    ("preview_url", job(preview_url=None)),
    ("isrc", job(isrc="USRC1760783")),  # 11 characters
    ("isrc", job(isrc="USRC176078390")),
    ("isrc", job(isrc="1SRC17607839")),
    ("isrc", job(isrc="USRC1760783X")),
    ("isrc", job(isrc="US RC17607839")),
    ("isrc", job(isrc="ıSRC17607839")),  # dotless i upper-cases to ASCII "I"
    ("isrc", job(isrc="")),
    ("artist", job(artist=["a"])),
    ("title", job(title="x" * 513)),
    ("duration_ms", job(duration_ms=0)),
    ("duration_ms", job(duration_ms=-5)),
    ("duration_ms", job(duration_ms=1.5)),
    ("duration_ms", job(duration_ms="1000")),
    ("duration_ms", job(duration_ms=True)),
    ("duration_ms", job(duration_ms=2**31)),
    ("release_id", job(release_id="r" * 65)),
    ("release_id", job(release_id="")),
    ("source", job(source="x" * 33)),
    ("source", job(source="i tunes")),
    ("run_id", job(run_id="bad id!")),
    ("run_id", job(run_id="")),
    ("run_id", job(run_id="r" * 65)),
    ("run_id", job(run_id="run-1\n")),  # Python's "$" alone would accept this
    ("isrc", job(isrc="USRC17607839\n")),
    ("force", job(force="true")),
    ("force", job(force=1)),
    ("titel", job(titel="Typo")),  # unknown field
    (None, []),
    (None, "a job"),
    (None, 1),
    (None, None),
]

# Stricter in code than JSON Schema can say (documented in JOB_SCHEMA["description"]).
CODE_ONLY_BAD: list[tuple[str, dict[str, Any]]] = [
    ("recording_id", job(recording_id="é" * 33)),  # 33 characters, 66 bytes
    ("recording_id", job(recording_id="a" * 63 + "é")),  # 64 characters, 65 bytes
    ("title", job(title="\ud800")),  # lone surrogate
    ("preview_url", job(preview_url="https://example.com:99999/")),
]


@pytest.mark.parametrize("data", GOOD, ids=lambda d: repr(d)[:60])
def test_good_jobs_pass_code_and_schema(data: dict[str, Any]) -> None:
    VALIDATOR.validate(data)
    parsed = Job.from_dict(data)
    assert Job.from_dict(parsed.to_dict()) == parsed
    VALIDATOR.validate(parsed.to_dict())


@pytest.mark.parametrize(("field", "data"), BAD, ids=lambda v: repr(v)[:60])
def test_bad_jobs_fail_code_and_schema(field: str | None, data: Any) -> None:
    assert not VALIDATOR.is_valid(data)
    with pytest.raises(InvalidJob) as info:
        Job.from_dict(data)
    err = info.value
    assert err.field == field
    assert err.code == "invalid_job"
    if field is not None:
        assert err.message.startswith(f"{field}: ")


@pytest.mark.parametrize(("field", "data"), CODE_ONLY_BAD, ids=lambda v: repr(v)[:60])
def test_code_is_stricter_than_schema_where_documented(field: str, data: dict[str, Any]) -> None:
    assert VALIDATOR.is_valid(data)
    with pytest.raises(InvalidJob) as info:
        Job.from_dict(data)
    assert info.value.field == field


# --------------------------------------------------------------------------- Job API


def test_normalisation_and_to_dict() -> None:
    parsed = Job.from_dict(job(isrc="us-rc1-76-07839", duration_ms=1000.0, artist=None))
    assert parsed.isrc == "USRC17607839"
    assert parsed.duration_ms == 1000 and isinstance(parsed.duration_ms, int)
    assert parsed.to_dict() == {
        "recording_id": MBID,
        "preview_url": URL,
        "isrc": "USRC17607839",
        "duration_ms": 1000,
        "force": False,
    }


def test_direct_construction_validates() -> None:
    with pytest.raises(InvalidJob, match="recording_id"):
        Job(recording_id="a/b", preview_url=URL)
    assert Job(MBID, URL, isrc="usrc17607839").isrc == "USRC17607839"


@pytest.mark.parametrize(("value", "expected"), [
    ("USRC17607839", "USRC17607839"), ("usrc17607839", "USRC17607839"),
    (" USRC17607839 ", "USRC17607839"), ("US-RC1-76-07839", "USRC17607839"),
    ("not an isrc", None), ("../release/abc?inc=x", None), ("USRC1760783", None),
    ("\u0131SRC17607839", None),  # dotless i upper-cases to ASCII "I"
    ("USRC1760783\u0669", None),  # an Arabic-Indic 9: a digit, not an ASCII one
    (" " * 60 + "USRC17607839", None), (None, None), (17607839, None),
])
def test_an_isrc_input_is_normalised_or_refused(value: object, expected: str | None) -> None:
    """The one check of ISRC inputs (CLI and API): spaces, case and hyphens forgiven."""
    assert parse_isrc(value) == expected


def test_json_round_trip_keeps_unicode() -> None:
    original = Job.from_dict(job(recording_id="Sigur Rós – Hoppípolla", title="Hoppípolla"))
    text = original.to_json()
    assert "\n" not in text and "Hoppípolla" in text
    assert Job.from_json(text) == original
    assert Job.from_json(text.encode("utf-8")) == original


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "",
        "[1, 2",
        '{"recording_id": "a", "recording_id": "b", "preview_url": "http://h/"}',
        '{"recording_id": "a", "preview_url": "http://h/", "duration_ms": NaN}',
        "[" * 100_000,
    ],
)
def test_from_json_errors_are_invalid_job(text: str) -> None:
    with pytest.raises(InvalidJob) as info:
        Job.from_json(text)
    assert info.value.field is None


def test_invalid_job_error_shape() -> None:
    with pytest.raises(InvalidJob) as info:
        Job.from_dict(job(titel="x", artst="y"))
    err = info.value
    assert isinstance(err, PreviewvecError)
    assert err.field == "artst"  # first unknown, sorted; all are named in the message
    assert "'artst'" in err.message and "'titel'" in err.message
    assert err.to_dict() == {"code": "invalid_job", "message": err.message, "field": "artst"}


# --------------------------------------------------------------------------- catalog


def test_catalog_mixed_lines_keep_line_numbers() -> None:
    good = json.dumps(job())
    lines = [
        "# catalog exported 2024-06-01",  # 1
        "",  # 2
        good,  # 3
        "{not json",  # 4
        "   ",  # 5
        json.dumps(job(titel="typo")),  # 6
        "[]",  # 7
        json.dumps(job(recording_id="second")),  # 8
        json.dumps(job(preview_url="file:///etc/passwd")),  # 9
        "  # indented comment",  # 10
        json.dumps(job(recording_id="a" * 65)),  # 11
    ]
    items = list(parse_catalog(lines))
    assert [(i.line_no, i.ok) for i in items] == [
        (3, True),
        (4, False),
        (6, False),
        (7, False),
        (8, True),
        (9, False),
        (11, False),
    ]
    assert items[0].job == Job.from_dict(job())
    assert items[4].job is not None and items[4].job.recording_id == "second"
    assert items[1].error is not None and "malformed JSON" in items[1].error.message
    assert [i.error.field for i in items if i.error] == [
        None,
        "titel",
        None,
        "preview_url",
        "recording_id",
    ]
    assert all((i.job is None) != (i.error is None) for i in items)


def test_catalog_says_an_array_is_not_json_lines() -> None:
    refused = InvalidJob("line longer than 262146 bytes")
    items = list(parse_catalog(["[" + json.dumps(job()) + "]", refused, json.dumps(job())]))
    assert [(i.line_no, i.ok) for i in items] == [(1, False), (2, False), (3, True)]
    assert items[0].error is not None
    assert items[0].error.message == (
        "a JSON array, not a job object: a catalog is JSON Lines, one job object per line")
    assert items[1].error is refused  # a line the reader refused comes through as is


def test_catalog_streams_lazily() -> None:
    endless = itertools.repeat(json.dumps(job()))  # reading it all would never finish
    first_three = list(itertools.islice(parse_catalog(endless), 3))
    assert [i.line_no for i in first_three] == [1, 2, 3]

    consumed: list[int] = []

    def lines() -> Iterator[str]:
        for n in range(1, 1000):
            consumed.append(n)
            yield json.dumps(job(recording_id=f"r{n}"))

    stream = parse_catalog(lines())
    next(stream)
    assert consumed == [1]


def test_catalog_from_file_with_bom_crlf_bytes_and_junk() -> None:
    text = (
        "\ufeff"
        + json.dumps(job())
        + "\r\n"
        + "# c\r\n"
        + json.dumps(job(recording_id="x"))
        + "\r\n"
    )
    items = list(parse_catalog(io.StringIO(text, newline="")))
    assert [(i.line_no, i.ok) for i in items] == [(1, True), (3, True)]

    raw = [json.dumps(job()).encode(), b"\xff\xfe broken", b"x" * (MAX_CATALOG_LINE_CHARS + 1)]
    items = list(parse_catalog(raw))
    assert [(i.line_no, i.ok) for i in items] == [(1, True), (2, False), (3, False)]
    assert "UTF-8" in items[1].error.message  # type: ignore[union-attr]
    assert "longer than" in items[2].error.message  # type: ignore[union-attr]


# --------------------------------------------------------------------------- vector ids


def test_vector_id_is_the_recording_id_when_it_fits() -> None:
    assert vector_id(MBID) == MBID
    assert vector_id("é" * 32) == "é" * 32


@pytest.mark.parametrize("rid", ["a" * 65, "é" * 33, "a/b", "a\nb", ".."])
def test_vector_id_hashes_what_does_not_fit(rid: str) -> None:
    vid = vector_id(rid)
    assert vid.startswith("sha256~") and len(vid.encode()) == 63
    assert vid == vector_id(rid)
    assert vid != vector_id(rid + "x")


def test_vector_id_rejects_empty() -> None:
    with pytest.raises(ValueError):
        vector_id("")


# --------------------------------------------------------------------------- properties

_id_chars = st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="/")
_text_chars = st.characters(exclude_categories=["Cs"])


def _isrc_variants(isrc: str) -> st.SearchStrategy[str]:
    hyphenated = f"{isrc[:2]}-{isrc[2:5]}-{isrc[5:7]}-{isrc[7:]}"
    return st.sampled_from([isrc, isrc.lower(), hyphenated, hyphenated.lower()])


_urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9-]{1,12}){0,3}", fullmatch=True),
    st.sampled_from(["", ":80", ":8443"]),
    st.text(st.sampled_from("abcXYZ019-._~%/?=&#+é"), max_size=60),
)

_jobs = st.builds(
    Job,
    recording_id=st.text(_id_chars, min_size=1, max_size=64).filter(
        lambda s: len(s.encode()) <= 64 and s not in (".", "..")
    ),
    preview_url=_urls,
    isrc=st.none() | st.from_regex(ISRC_PATTERN, fullmatch=True).flatmap(_isrc_variants),
    artist=st.none() | st.text(_text_chars, max_size=512),
    title=st.none() | st.text(_text_chars, max_size=40),
    duration_ms=st.none() | st.integers(1, 2**31 - 1),
    release_id=st.none() | st.text(_text_chars, min_size=1, max_size=64),
    source=st.none() | st.from_regex(TOKEN_PATTERN.replace("+", "{1,32}"), fullmatch=True),
    run_id=st.none() | st.from_regex(TOKEN_PATTERN.replace("+", "{1,64}"), fullmatch=True),
    force=st.booleans(),
)


@given(_jobs)
def test_to_dict_round_trips(original: Job) -> None:
    data = original.to_dict()
    assert Job.from_dict(data) == original
    assert Job.from_json(original.to_json()) == original
    assert Job.from_dict(json.loads(json.dumps(data))) == original
    VALIDATOR.validate(data)
    assert vector_id(original.recording_id) == original.recording_id


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(), max_size=20)
    | st.text(st.characters(categories=["Cs", "Cc", "Lo"]), max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_job_shaped = st.dictionaries(st.sampled_from(JOB_FIELDS) | st.text(max_size=8), _json, max_size=10)
_mostly_valid = st.builds(
    lambda base, extra: {**base, **extra},
    _jobs.map(Job.to_dict),
    st.dictionaries(st.sampled_from(JOB_FIELDS), _json, max_size=2),
)


@given(_json | _job_shaped | _mostly_valid)
def test_from_dict_only_ever_raises_invalid_job(data: Any) -> None:
    try:
        parsed = Job.from_dict(data)
    except InvalidJob as exc:
        assert exc.code == "invalid_job" and exc.message
        return
    # Whatever the code accepts, the schema accepts (the code is the stricter of the two).
    VALIDATOR.validate(data)
    assert Job.from_dict(parsed.to_dict()) == parsed


@given(st.text(max_size=200) | _json.map(json.dumps) | _mostly_valid.map(json.dumps))
def test_from_json_on_arbitrary_text_only_raises_invalid_job(text: str) -> None:
    with contextlib.suppress(InvalidJob):
        Job.from_json(text)
