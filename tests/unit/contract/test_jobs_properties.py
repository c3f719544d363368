"""Property-based tests (hypothesis) of the job contract.

Each property says what must hold for *every* input, not just the examples in
tests/unit/contract/test_jobs.py: any JSON value is a :class:`Job` or an
:class:`InvalidJob` naming a real field, never another exception; the JSON Schema and the
code agree except where the schema documents that the code is stricter; an invalid job is
always accounted under ids that Redis and logs can hold; a catalog never raises and keeps
its line numbers. (The matching normaliser's properties are in
tests/unit/producers/test_matching_properties.py.)
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from hypothesis import example, given
from hypothesis import strategies as st

from contract.jobs import (
    JOB_FIELDS,
    JOB_SCHEMA,
    RECORDING_ID_MAX_BYTES,
    RUN_ID_MAX_CHARS,
    TOKEN_PATTERN,
    InvalidJob,
    Job,
    failure_ids,
    parse_catalog,
)

VALIDATOR = jsonschema.Draft202012Validator(
    JOB_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

# --------------------------------------------------------------------------- strategies

_any_text = st.text(st.characters(), max_size=24)  # any code point, surrogates included
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_any_text, inner, max_size=3),
    max_leaves=8,
)
_urlish = st.one_of(
    _any_text,
    st.builds(lambda scheme, host, port, path: f"{scheme}{host}{port}{path}",
              st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "file://", "//",
                               "", "javascript:"]),
              st.sampled_from(["p.scdn.co", "127.0.0.1", "[::1]", "a@b.c", "xn--bcher-kva.de",
                               "ex ample.com", "", "b\u00fccher.de", "h\ud800"]),
              st.sampled_from(["", ":80", ":0", ":65535", ":65536", ":-1", ":x"]),
              st.sampled_from(["", "/", "/a.m4a", "/a b", "/\\x", "/é", "/?q=1#f"])),
)
_field_values: dict[str, Any] = {
    "recording_id": _any_text | st.text("abcé🎵-_./", min_size=60, max_size=70) | _json,
    "preview_url": _urlish | _json,
    "isrc": st.sampled_from(["USRC17607839", "us-rc1-76-07839", "USRC1760783", "ÙSRC17607839"])
    | _json,
    "duration_ms": st.integers(-5, 2**40) | st.floats() | _json,
    "run_id": st.from_regex(r"[A-Za-z0-9._-]{1,70}", fullmatch=True) | _json,
    "source": st.sampled_from(["itunes", "a b", "", "x" * 40]) | _json,
    "force": st.booleans() | _json,
}
_jobish = st.fixed_dictionaries(
    {},
    optional={name: _field_values.get(name, _any_text | _json) for name in JOB_FIELDS},
) | st.dictionaries(st.sampled_from(JOB_FIELDS) | _any_text, _json, max_size=5)

# The three differences JOB_SCHEMA's description documents (the code is stricter).
_DOCUMENTED_STRICTER = (
    "bytes of UTF-8",  # recording_id counted in bytes, not characters
    "lone surrogate",
    "port",  # a port above 65535
)


# --------------------------------------------------------------------------- jobs


@given(_json | _jobish)
@example({"recording_id": "a" * 64, "preview_url": "http://h:65536/"})
@example({"recording_id": "é" * 40, "preview_url": "http://h/"})
def test_any_json_is_a_job_or_an_invalid_job_naming_its_field(data: Any) -> None:
    try:
        job = Job.from_dict(data)
    except InvalidJob as exc:
        assert exc.code == "invalid_job" and exc.message
        if exc.field is not None and isinstance(data, dict):
            assert exc.field in JOB_FIELDS or exc.field in map(str, data)
        # The schema agrees it is invalid, unless this is a documented extra strictness.
        if VALIDATOR.is_valid(data):
            assert any(r.lower() in exc.message.lower() for r in _DOCUMENTED_STRICTER), (
                exc.message)
        return
    VALIDATOR.validate(data)  # accepted by the code ⇒ accepted by the schema
    assert Job.from_json(job.to_json()) == job  # and it round-trips


@given(_json | _jobish)
def test_invalid_jobs_are_accounted_under_storable_ids(data: Any) -> None:
    recording_id, run_id = failure_ids(data)
    encoded = recording_id.encode("utf-8")  # never raises: no lone surrogates survive
    assert 1 <= len(encoded) <= RECORDING_ID_MAX_BYTES
    assert run_id is None or (len(run_id) <= RUN_ID_MAX_CHARS
                              and re.fullmatch(TOKEN_PATTERN, run_id))
    try:
        job = Job.from_dict(data)
    except InvalidJob:
        return
    # For a valid job these are exactly its own ids.
    assert (recording_id, run_id) == (job.recording_id, job.run_id)


@given(st.lists(st.binary(max_size=40) | _any_text | _jobish.map(
    lambda d: json.dumps(d, ensure_ascii=False, default=str)), max_size=8))
def test_catalog_never_raises_and_keeps_line_numbers(lines: list[Any]) -> None:
    items = list(parse_catalog(lines))
    numbers = [item.line_no for item in items]
    assert numbers == sorted(set(numbers))
    assert all(1 <= n <= len(lines) for n in numbers)
    for item in items:
        assert (item.job is None) != (item.error is None)
        if item.error is not None:
            assert item.error.code == "invalid_job"


@given(st.builds(lambda host, port: f"http://{host}:{port}/a.m4a",
                 st.sampled_from(["p.scdn.co", "127.0.0.1", "[::1]"]),
                 st.integers(0, 10**6)))
def test_ports_are_accepted_exactly_when_valid(url: str) -> None:
    port = urlsplit(url).port if int(url.rsplit(":", 1)[1].split("/")[0]) <= 65535 else None
    try:
        Job(recording_id="r", preview_url=url)
    except InvalidJob:
        assert port is None
    else:
        assert port is not None
