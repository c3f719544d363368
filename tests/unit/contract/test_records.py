"""contract/records.py: pure encoding of feature records, keys, and validated decoding."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import pytest

from contract.layout import FEATURE_VERSION, VECTOR_DIM, names_hash
from contract.records import (
    PROVENANCE_KEYS,
    CorruptRecord,
    FeatureRecord,
    IncompatibleRecord,
    decode_record,
    encode_record,
    make_provenance,
    record_key,
    recording_id_of_key,
)


def a_record(recording_id: str = "mbid-1", **changes: Any) -> FeatureRecord:
    rng = np.random.default_rng(7)
    fields: dict[str, Any] = {
        "recording_id": recording_id,
        "vector": rng.standard_normal(VECTOR_DIM).astype(np.float32),
        "descriptors": {"tempo_bpm": np.float32(120.5), "key": "A minor",
                        "chords": ("Am", "F")},
        "provenance": make_provenance(preview_url="https://p.example/a.m4a",
                                      audio_sha256="ab" * 32, source="test", run_id="r1",
                                      decoder="pyav test", created_at="2026-01-01T00:00:00Z"),
        "timings_s": {"fetch": 0.25, "features": np.float64(1.5)},
    }
    fields.update(changes)
    return FeatureRecord(**fields)


def encoded_doc(**changes: Any) -> dict[str, Any]:
    """A valid record as its JSON document, with top-level fields replaced."""
    doc = json.loads(encode_record(a_record()))
    doc.update(changes)
    return doc


def as_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# ------------------------------------------------------------------ encode / decode


def test_round_trip_keeps_every_field_and_the_float32_vector_exactly() -> None:
    record = a_record()
    decoded = decode_record(encode_record(record))
    assert decoded.recording_id == record.recording_id
    assert decoded.feature_version == FEATURE_VERSION
    assert decoded.names_hash == names_hash()
    np.testing.assert_array_equal(decoded.vector_array(), record.vector_array())
    assert decoded.descriptors == {"tempo_bpm": 120.5, "key": "A minor", "chords": ["Am", "F"]}
    assert decoded.provenance == record.provenance
    assert set(decoded.provenance) == set(PROVENANCE_KEYS)
    assert decoded.timings_s == {"fetch": 0.25, "features": 1.5}
    assert decoded.key == record.key


def test_encoding_is_deterministic_compact_sorted_utf8() -> None:
    record = a_record("é-ü")
    data = encode_record(record)
    assert data == encode_record(a_record("é-ü"))
    assert data == encode_record(decode_record(data))  # re-encoding changes no byte
    assert b" " not in data.replace(b"A minor", b"").replace(b"pyav test", b"")
    assert "é-ü".encode() in data  # UTF-8, not \u escapes
    doc = json.loads(data)
    assert list(doc) == sorted(doc)


def test_a_float64_vector_round_trips_as_float64() -> None:
    vector = np.linspace(-1.0, 1.0, VECTOR_DIM) / 3
    decoded = decode_record(encode_record(a_record(vector=vector)))
    assert decoded.vector == vector.tolist()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encoding_refuses_non_finite_vectors(bad: float) -> None:
    vector = np.zeros(VECTOR_DIM, dtype=np.float32)
    vector[3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        encode_record(a_record(vector=vector))


def test_encoding_refuses_non_finite_descriptors_and_bad_vectors() -> None:
    with pytest.raises(ValueError):
        encode_record(a_record(descriptors={"x": float("nan")}))
    with pytest.raises(ValueError, match="1-D numeric"):
        encode_record(a_record(vector=np.zeros((2, 3))))
    with pytest.raises(ValueError, match="1-D numeric"):
        encode_record(a_record(vector=["a", "b"]))


# ------------------------------------------------------------------------------ keys


def test_record_key_shards_by_sha1_of_the_id() -> None:
    shard = hashlib.sha1(b"mbid-1").hexdigest()[:2]
    assert record_key("pv2", "mbid-1") == f"features/pv2/{shard}/mbid-1.json"
    assert a_record("mbid-1").key == record_key(FEATURE_VERSION, "mbid-1")


@pytest.mark.parametrize("recording_id", [
    "mbid-1", "a.b_c-d", "é", "a b", "a%20b", "%", "..", "?x", "東京事変", "x" * 64, "a\\b",
    "é" * 32,
])
def test_record_key_is_key_safe_and_inverted_exactly(recording_id: str) -> None:
    key = record_key(FEATURE_VERSION, recording_id)
    name = key.rsplit("/", 1)[1]
    assert all(c.isascii() and (c.isalnum() or c in "._-%") for c in name), key
    assert recording_id_of_key(key) == recording_id


def test_distinct_ids_never_share_a_key() -> None:
    ids = ["a b", "a%20b", "a+b", "A b", "é", "%C3%A9", "e\u0301"]
    assert len({record_key(FEATURE_VERSION, rid) for rid in ids}) == len(ids)


@pytest.mark.parametrize("recording_id", ["", "a/b", "x" * 65, "é" * 33])
def test_record_key_refuses_bad_ids(recording_id: str) -> None:
    with pytest.raises(ValueError):
        record_key(FEATURE_VERSION, recording_id)


@pytest.mark.parametrize("version", ["", "pv/2"])
def test_record_key_refuses_bad_versions(version: str) -> None:
    with pytest.raises(ValueError, match="feature_version"):
        record_key(version, "mbid-1")


@pytest.mark.parametrize("key", [
    "normalizers/pv2.json", "features/pv2/ab/.json", "features/pv2/ab/x.txt",
    "features/pv2/ab/%FF.json",  # not UTF-8 once unquoted
    f"features/pv2/ab/{'x' * 65}.json",
])
def test_recording_id_of_key_refuses_what_record_key_never_makes(key: str) -> None:
    with pytest.raises(ValueError):
        recording_id_of_key(key)


# --------------------------------------------------------------- malformed records


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"{", b"[]", b"null", b'"record"',
    encode_record(a_record())[:-10],  # truncated
])
def test_undecodable_bytes_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode_record(data)


@pytest.mark.parametrize("name", [
    "recording_id", "feature_version", "names_hash", "vector", "descriptors", "provenance",
    "timings_s",
])
def test_a_missing_field_is_corrupt(name: str) -> None:
    doc = encoded_doc()
    del doc[name]
    with pytest.raises(CorruptRecord, match=name):
        decode_record(as_bytes(doc))


@pytest.mark.parametrize("changes", [
    {"recording_id": 7},
    {"recording_id": ""},
    {"recording_id": "a/b"},
    {"feature_version": 2},
    {"vector": "0,1"},
    {"descriptors": []},
    {"provenance": None},
    {"timings_s": {"fetch": "slow"}},
    {"timings_s": {"fetch": True}},
    {"vector": [True] * VECTOR_DIM},
    {"vector": ["1.0"] * VECTOR_DIM},
    {"vector": [None] * VECTOR_DIM},
])
def test_mistyped_fields_are_corrupt(changes: dict[str, Any]) -> None:
    with pytest.raises(CorruptRecord):
        decode_record(as_bytes(encoded_doc(**changes)))


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_in_stored_json_are_corrupt(token: bytes) -> None:
    data = encode_record(a_record(vector=np.zeros(VECTOR_DIM, dtype=np.float32)))
    data = data.replace(b'"vector":[0.0,', b'"vector":[' + token + b",", 1)
    assert token in data
    with pytest.raises(CorruptRecord, match="JSON"):
        decode_record(data)


def test_a_huge_number_that_overflows_to_infinity_is_corrupt() -> None:
    vector = [0.0] * VECTOR_DIM
    data = as_bytes(encoded_doc(vector=vector)).replace(b"[0.0,", b"[1e999,", 1)
    with pytest.raises(CorruptRecord, match="non-finite"):
        decode_record(data)


@pytest.mark.parametrize("token", [b"1e39", b"-3.5e38", b"340282357000000000000000000000000000000"])
def test_a_number_beyond_float32_is_corrupt(token: bytes) -> None:
    """Given a stored value finite as a float64 but beyond float32 (readers take the
    vector as float32: it would be inf in matrix() and the export), expect CorruptRecord."""
    vector = [0.0] * VECTOR_DIM
    data = as_bytes(encoded_doc(vector=vector)).replace(b"[0.0,", b"[" + token + b",", 1)
    with pytest.raises(CorruptRecord, match="float32"):
        decode_record(data)
    largest = float(np.finfo(np.float32).max)
    data = as_bytes(encoded_doc(vector=vector)).replace(
        b"[0.0,", b"[" + repr(largest).encode() + b",", 1)
    assert decode_record(data).vector_array()[0] == np.float32(largest)


@pytest.mark.parametrize("changes", [
    {"feature_version": "pv1"},
    {"names_hash": "0" * 64},
    {"vector": [0.0] * (VECTOR_DIM - 1)},
    {"vector": [0.0] * (VECTOR_DIM + 1)},
])
def test_another_layout_is_incompatible_not_corrupt(changes: dict[str, Any]) -> None:
    with pytest.raises(IncompatibleRecord) as caught:
        decode_record(as_bytes(encoded_doc(**changes)))
    assert caught.value.code == "incompatible_record"


def test_a_record_of_the_previous_computation_pv2_stays_readable_as_pv2() -> None:
    # pv3 to pv8 changed the values, not the names: pv2 records decode, under their own
    # version.
    record = a_record(feature_version="pv2")
    decoded = decode_record(encode_record(record))
    assert decoded.feature_version == "pv2" != FEATURE_VERSION
    assert decoded.key == record_key("pv2", "mbid-1")
    np.testing.assert_array_equal(decoded.vector_array(), record.vector_array())


def test_a_reader_that_expects_a_version_refuses_another() -> None:
    data = encode_record(a_record(feature_version="pv2"))
    with pytest.raises(IncompatibleRecord, match="pv2, not pv8"):
        decode_record(data, FEATURE_VERSION)
    assert decode_record(encode_record(a_record()), FEATURE_VERSION).feature_version == "pv8"


def test_error_codes_are_stable() -> None:
    with pytest.raises(CorruptRecord) as caught:
        decode_record(b"{")
    assert caught.value.code == "corrupt_record"


def test_integer_vector_values_decode_as_floats() -> None:
    decoded = decode_record(as_bytes(encoded_doc(vector=[1] * VECTOR_DIM)))
    assert decoded.vector == [1.0] * VECTOR_DIM
    assert all(type(x) is float for x in decoded.vector)


# ------------------------------------------------------------------ computations


def test_a_record_keeps_the_computation_it_was_made_with() -> None:
    comp = {"analysis_sr": 44_100, "max_duration_s": 30.0}
    record = a_record(feature_version=f"{FEATURE_VERSION}-0123456789", computation=comp)
    decoded = decode_record(encode_record(record))
    assert decoded.computation == comp
    assert decoded.feature_version == f"{FEATURE_VERSION}-0123456789"


def test_a_record_written_before_computations_were_stored_stays_readable() -> None:
    data = encode_record(a_record())
    assert b'"computation"' not in data  # old records' bytes, unchanged
    assert decode_record(data).computation is None


def test_a_reader_can_insist_on_its_own_version() -> None:
    other = encode_record(a_record(feature_version=f"{FEATURE_VERSION}-0123456789"))
    assert decode_record(other).feature_version.startswith(FEATURE_VERSION)
    with pytest.raises(IncompatibleRecord, match="not pv"):
        decode_record(other, FEATURE_VERSION)


def test_a_computation_that_is_not_an_object_is_corrupt() -> None:
    with pytest.raises(CorruptRecord, match="computation"):
        decode_record(as_bytes(encoded_doc(computation=[1, 2])))


def test_decode_stored_wants_the_records_own_key() -> None:
    """A record read from another recording's key (or a key that names none) is corrupt
    there, said with the key; under its own key it decodes as decode_record does."""
    from contract.records import CorruptRecord, decode_stored
    from testkit.records import synthetic_record

    record = synthetic_record(1)
    data = encode_record(record)
    assert decode_stored(record.key, data).recording_id == record.recording_id
    other = synthetic_record(2).key
    with pytest.raises(CorruptRecord, match=re.escape(other)):
        decode_stored(other, data)
    with pytest.raises(CorruptRecord, match="not of the recording"):
        decode_stored("features/pv4/zz/.json", data)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_nan_literal_is_named_as_such_not_as_invalid_json(literal: str) -> None:
    """Given a stored record whose vector holds NaN (valid to Python's json, not JSON),
    expect a message that says so, naming the key when read from the store."""
    from contract.records import CorruptRecord, decode_stored
    from testkit.records import synthetic_record

    record = synthetic_record(4)
    doc = json.loads(encode_record(record))
    doc["vector"][7] = float(literal)
    data = json.dumps(doc).encode()  # json writes NaN / Infinity / -Infinity
    assert literal.encode() in data
    with pytest.raises(CorruptRecord, match=f"non-finite number \\({literal}\\)"):
        decode_record(data)
    with pytest.raises(CorruptRecord, match=f"^stored record {re.escape(record.key)}: "):
        decode_stored(record.key, data)
    with pytest.raises(CorruptRecord, match="not valid UTF-8 JSON"):
        decode_record(data[:-10])  # truncated: still said as before
