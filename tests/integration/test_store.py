"""Feature store: the same contract tests on a local folder and on a real S3 API (moto)."""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from contract.errors import ConfigError, StoreError
from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.records import (
    FeatureRecord,
    decode_record,
    encode_record,
    make_provenance,
    record_key,
)
from contract.store import FeatureStore, StoreFolderMissing, StoreUnavailable, open_store
from contract.store.local import LocalStore
from contract.store.s3 import S3Store
from tests.conftest import free_port
from tests.local_http import start_server, stop_server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    request.getfixturevalue("aws_test_env")
    import boto3

    bucket = f"pv-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    # A small page size so pagination is exercised with ~1000 keys.
    yield S3Store(bucket, "runs/test", page_size=300)


def test_put_get_exists_overwrite_delete(store: FeatureStore) -> None:
    key = "features/pv1/ab/one.json"
    assert not store.exists(key)
    store.put(key, b"first")
    assert store.exists(key)
    assert store.get(key) == b"first"
    store.put(key, b"second, longer value")  # overwrite
    assert store.get(key) == b"second, longer value"
    store.put(key, b"second, longer value")  # idempotent
    assert store.get(key) == b"second, longer value"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting a missing key is fine


def test_missing_key_is_file_not_found(store: FeatureStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.get("features/pv1/00/missing.json")


def test_bad_keys_are_refused(store: FeatureStore) -> None:
    for key in ("", "/abs", "a/../b", "a//b", "a/.hidden", "a\\b"):
        with pytest.raises(ValueError):
            store.put(key, b"x")


def test_iter_keys_paginates_and_sorts(store: FeatureStore) -> None:
    keys = [f"features/pv1/{i % 7:02x}/rec-{i:05d}.json" for i in range(1010)]
    others = ["features/pv2/00/x.json", "features/pv1-old/00/y.json", "runs/r1.json"]
    with ThreadPoolExecutor(8) as pool:  # also exercises one client shared by threads
        list(pool.map(lambda k: store.put(k, k.encode()), keys + others))

    listed = list(store.iter_keys("features/pv1/"))
    assert listed == sorted(keys)  # exactly the prefix, ascending, no duplicates
    assert list(store.iter_keys("features/pv1")) == sorted([*keys, others[1]])
    assert list(store.iter_keys("features/pv1/03/")) == sorted(k for k in keys if "/03/" in k)
    assert len(list(store.iter_keys())) == len(keys) + len(others)
    assert list(store.iter_keys("nothing/here/")) == []


def test_record_round_trip(store: FeatureStore) -> None:
    rng = np.random.default_rng(7)
    record = FeatureRecord(
        recording_id="mb:1b2c3d4e ünï~code",
        vector=rng.standard_normal(VECTOR_DIM).astype(np.float32).tolist(),
        descriptors={"tempo_bpm": 121.5, "key": "F#", "mode": "minor", "energy": 0.61},
        provenance=make_provenance(
            preview_url="https://audio-ssl.itunes.apple.com/x.m4a",
            audio_sha256="0" * 64,
            source="itunes",
            run_id="run-1",
            isrc="USRC17607839",
            artist="Artist",
            title="Title",
        ),
        timings_s={"decode": 0.05, "spectra": 0.4},
    )
    key = record.key
    assert key == record_key(FEATURE_VERSION, record.recording_id)
    store.put(key, encode_record(record))
    decoded = decode_record(store.get(key))
    assert decoded == record
    assert list(store.iter_keys(f"features/{FEATURE_VERSION}/")) == [key]


def test_record_keys_are_sharded_and_safe() -> None:
    import hashlib

    key = record_key("pv1", "mb:1b2c ünï~code")
    shard = hashlib.sha1("mb:1b2c ünï~code".encode()).hexdigest()[:2]
    assert key == f"features/pv1/{shard}/mb%3A1b2c%20%C3%BCn%C3%AF%7Ecode.json"
    assert record_key("pv1", "abc-DEF_1.2").endswith("/abc-DEF_1.2.json")
    for bad in ("", "a/b", "x" * 65):
        with pytest.raises(ValueError):
            record_key("pv1", bad)


def test_corrupt_and_incompatible_records_are_typed() -> None:
    import json

    from contract.records import CorruptRecord, IncompatibleRecord

    record = FeatureRecord("rec-1", [0.5] * VECTOR_DIM, {}, {"source": "test"})
    good = json.loads(encode_record(record))
    for data in (
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        encode_record(record)[:-10],  # truncated write
        json.dumps({**good, "vector": [*good["vector"][:-1], True]}).encode(),
        json.dumps({**good, "vector": [*good["vector"][:-1], 1e999]}).encode(),
        json.dumps({**good, "vector": [*good["vector"][:-1], "NaN"]}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "provenance"}).encode(),
    ):
        with pytest.raises(CorruptRecord):
            decode_record(data)
    for change in ({"names_hash": "0" * 64}, {"feature_version": "pv0"}, {"vector": [1.0]}):
        with pytest.raises(IncompatibleRecord):
            decode_record(json.dumps({**good, **change}).encode())
    with pytest.raises(ValueError):
        encode_record(FeatureRecord("rec-1", [float("nan")] * VECTOR_DIM, {}, {}))
    with pytest.raises(ValueError):
        encode_record(FeatureRecord("rec-1", [0.0] * VECTOR_DIM, {"energy": float("inf")}, {}))
    assert b" " not in encode_record(record)  # compact
    assert encode_record(record) == encode_record(decode_record(encode_record(record)))


def test_local_writes_are_atomic_under_concurrency(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key = "features/pv1/aa/contended.json"
    payloads = [bytes([65 + i]) * 1_000_000 for i in range(6)]  # 1 MB each: not one write()
    store.put(key, payloads[0])
    stop = threading.Event()
    torn: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = store.get(key)
            if data not in payloads:
                torn.append(len(data))

    def writer(payload: bytes) -> None:
        for _ in range(10):
            store.put(key, payload)

    reading = threading.Thread(target=reader)
    reading.start()
    with ThreadPoolExecutor(len(payloads)) as pool:
        list(pool.map(writer, payloads))
    stop.set()
    reading.join()

    assert torn == []  # a reader never saw a partial or mixed value
    assert store.get(key) in payloads
    leftovers = [p.name for p in (tmp_path / "store").rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert list(store.iter_keys()) == [key]


@pytest.mark.parametrize(("failing", "code", "transient"), [
    ("fsync", errno.ENOSPC, True),  # the data did not fit
    ("replace", errno.EDQUOT, True),  # a quota used up
    ("mkstemp", errno.ENOSPC, True),  # not even an inode for the temp file
    ("fsync", errno.EIO, False),
    ("replace", errno.EACCES, False),  # someone must change the folder: permanent
    ("mkstemp", errno.EROFS, False),
])
def test_a_full_disk_is_transient_and_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, code: int,
        transient: bool) -> None:
    """Given a write failing with ENOSPC or EDQUOT (the audit: a full disk was a permanent
    ``store_error`` that `previewvec retry` never re-ran), expect StoreUnavailable, which
    the task retries and `retry` re-runs; other errors stay StoreError. Either way the
    earlier value is intact and no temp file is left."""
    import os
    import tempfile

    store = LocalStore(tmp_path / "store")
    key = "features/pv1/aa/full.json"
    store.put(key, b"before")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    module = tempfile if failing == "mkstemp" else os
    monkeypatch.setattr(module, failing, fail)
    with pytest.raises(StoreError, match=os.strerror(code)) as raised:
        store.put(key, b"after")
    monkeypatch.undo()

    assert isinstance(raised.value, StoreUnavailable) == transient
    assert raised.value.code == ("store_unavailable" if transient else "store_error")
    assert store.get(key) == b"before"
    assert [p.name for p in (tmp_path / "store").rglob(".*")] == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="mounting a tmpfs needs root")
def test_a_store_on_a_real_full_disk_is_unavailable_until_space_returns(
        tmp_path: Path) -> None:
    """Given the store on a 1 MB tmpfs filled by another file, expect a record write to be
    StoreUnavailable with nothing half-written, and to succeed once the space is freed."""
    import shutil
    import subprocess

    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        filler = folder / "filler"
        # Unbuffered: written until the disk is full, nothing left to flush on close.
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            fh.write(b"\0" * (shutil.disk_usage(folder).free + 4096))
        store = LocalStore(folder / "store")
        key = "features/pv1/aa/full.json"
        with pytest.raises(StoreUnavailable, match="No space left on device"):
            store.put(key, b"x" * 200_000)
        assert not store.exists(key)
        assert [p.name for p in folder.rglob(".*")] == []
        filler.unlink()
        store.put(key, b"x" * 200_000)
        assert store.get(key) == b"x" * 200_000
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_open_store_dispatches(tmp_path: Path, aws_test_env: str) -> None:
    assert isinstance(open_store(str(tmp_path / "s")), LocalStore)
    s3 = open_store("s3://some-bucket/a/prefix/")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == ("some-bucket", "a/prefix")
    with pytest.raises(ValueError):
        open_store("gs://bucket/x")


def test_a_reader_of_a_missing_folder_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """Given a folder that does not exist opened to read (``create=False``), expect
    StoreFolderMissing naming it from check(), get() and iter_keys(), and no folder made;
    a write still creates it, after which reads see the key."""
    folder = tmp_path / "typo" / "store"
    store = open_store(str(folder), create=False)
    for read in (store.check, lambda: store.get("features/x.json"),
                 lambda: list(store.iter_keys("features/"))):
        with pytest.raises(StoreFolderMissing, match=f"no feature store at {folder}: the "
                                                     "folder does not exist"):
            read()
    assert not store.exists("features/x.json")
    assert not (tmp_path / "typo").exists()
    store.put("features/x.json", b"{}")
    store.check()
    assert list(store.iter_keys("features/")) == ["features/x.json"]
    with pytest.raises(FileNotFoundError, match="no such key"):
        store.get("features/y.json")  # a missing key is still just that


def test_a_reader_of_a_file_is_refused_at_once(tmp_path: Path) -> None:
    """Given a regular file where the store folder should be, opened to read, expect
    StoreFolderMissing at once ('is not a folder'); the writer's open says it cannot
    create the folder, as before."""
    path = tmp_path / "file"
    path.write_bytes(b"x")
    with pytest.raises(StoreFolderMissing, match="is not a folder"):
        open_store(str(path), create=False)
    with pytest.raises(StoreError, match="cannot create store folder"):
        open_store(str(path))


@pytest.mark.parametrize("url", ["", "file://", "  "])
def test_a_store_url_naming_no_folder_is_refused(url: str) -> None:
    # It was the current directory, silently: records written wherever a command ran.
    with pytest.raises(ConfigError, match="names no folder"):
        open_store(url)


def test_s3_endpoint_down_is_store_unavailable(aws_test_env: str, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # closed
    store = S3Store("bucket", max_retries=0, connect_timeout=1, read_timeout=1)
    with pytest.raises(StoreUnavailable) as info:
        store.get("features/pv1/00/x.json")
    assert info.value.code == "store_unavailable"
    with pytest.raises(StoreUnavailable):
        store.put("features/pv1/00/x.json", b"x")
    with pytest.raises(StoreUnavailable):
        list(store.iter_keys("features/"))
    assert "testing-secret-key" not in str(info.value)


class _SlowDownHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request like a throttling S3/R2 endpoint."""

    protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" at once
    served = 0

    def _reply(self) -> None:
        type(self).served += 1
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>"
        )
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_s3_throttling_is_store_unavailable(aws_test_env: str, monkeypatch) -> None:
    server = start_server(_SlowDownHandler)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{server.server_port}")
        store = S3Store("bucket", max_retries=1, connect_timeout=1, read_timeout=2)
        _SlowDownHandler.served = 0
        with pytest.raises(StoreUnavailable, match=r"SlowDown|503"):
            store.get("features/pv1/00/x.json")
        assert _SlowDownHandler.served == 2  # botocore retried once, then we mapped it
        impatient = S3Store("bucket", max_retries=0, connect_timeout=1, read_timeout=2)
        with pytest.raises(StoreUnavailable):
            impatient.put("features/pv1/00/x.json", b"x")
        with pytest.raises(StoreUnavailable):
            impatient.exists("features/pv1/00/x.json")
    finally:
        stop_server(server)


class _TruncatedListingHandler(http.server.BaseHTTPRequestHandler):
    """A ListObjectsV2 answer that says IsTruncated but gives no continuation token (a
    broken S3-compatible server): botocore's paginator would stop there quietly."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            b"<Name>bucket</Name><Prefix>features/</Prefix><KeyCount>1</KeyCount>"
            b"<MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>"
            b"<Contents><Key>features/pv1/00/a.json</Key><Size>2</Size></Contents>"
            b"</ListBucketResult>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_listing_truncated_with_no_way_on_is_store_unavailable(
        aws_test_env: str, monkeypatch) -> None:
    server = start_server(_TruncatedListingHandler)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{server.server_port}")
        store = S3Store("bucket", max_retries=0, connect_timeout=1, read_timeout=2)
        with pytest.raises(StoreUnavailable, match="no continuation token"):
            list(store.iter_keys("features/"))
    finally:
        stop_server(server)
