"""Every CLI command meets the faults a user meets: one line on stderr, no traceback, and
the documented exit status (README "Commands"). Real components: a private redis-server,
moto's S3 server (one that checks credentials too), closed ports for services that are
down, real files and folders."""

from __future__ import annotations

import gzip
import os
import shlex
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from redis import Redis

from contract.layout import VECTOR_DIM
from contract.records import FeatureRecord, encode_record, make_provenance
from contract.store import open_store
from previewvec.cli import (
    EXIT_INDEX,
    EXIT_INPUT_FILE,
    EXIT_NOT_FOUND,
    EXIT_REDIS,
    EXIT_STORE,
    EXIT_USAGE,
)
from testkit.records import synthetic_record
from tests.conftest import MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY, free_port, moto_server

BUCKET = "pv-cli-faults"
AWS_VARS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module")
def bucket(moto_endpoint: str) -> str:
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name=MOTO_REGION,
                          aws_access_key_id=MOTO_ACCESS_KEY,
                          aws_secret_access_key=MOTO_SECRET_KEY)
    client.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def checking_moto() -> Iterator[str]:
    """A moto server that refuses unknown access keys, as S3 and R2 do."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as endpoint:
        yield endpoint


@pytest.fixture
def base_env(redis_url: str, moto_endpoint: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in AWS_VARS and not k.startswith("PREVIEWVEC_")}
    if "PREVIEWVEC_CACHE_DIR" in os.environ:  # the warmed numba cache
        env["PREVIEWVEC_CACHE_DIR"] = os.environ["PREVIEWVEC_CACHE_DIR"]
    # The store folder exists, as once a worker wrote to it (readers and the reducer never
    # create it): the faults under test are the other settings'.
    (tmp_path / "store").mkdir()
    env.update({
        "PREVIEWVEC_BROKER_URL": redis_url,
        "PREVIEWVEC_STORE": str(tmp_path / "store"),
        "PREVIEWVEC_INDEX": str(tmp_path / "index"),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        "AWS_REGION": MOTO_REGION,
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
    })
    return env


def closed_url(scheme: str = "http", path: str = "") -> str:
    return f"{scheme}://127.0.0.1:{free_port()}{path}"


def expect_fault(env: dict[str, str], args: list[str], status: int, *needles: str,
                 timeout_s: float = 120) -> str:
    """Run the CLI; assert the exit status and exactly one stderr line, no traceback."""
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", *args], env=env,
                            capture_output=True, text=True, timeout=timeout_s,
                            stdin=subprocess.DEVNULL)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("previewvec: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("command", [["reduce"], ["reindex"], ["similar", "some-id"]])
@pytest.mark.parametrize(("store", "needle"), [
    ("ftp://x/features", "unsupported store URL 'ftp://x/features'"),
    ("s3://", "names no bucket"),
    ("s3:///prefix", "names no bucket"),
])
def test_bad_store_url(base_env, command, store, needle) -> None:
    expect_fault({**base_env, "PREVIEWVEC_STORE": store}, command, EXIT_USAGE, needle,
                 "PREVIEWVEC_STORE")


def test_malformed_s3_endpoint(base_env, bucket) -> None:
    env = {**base_env, "PREVIEWVEC_STORE": f"s3://{bucket}/p",
           "AWS_ENDPOINT_URL_S3": "not a url"}
    expect_fault(env, ["reindex"], EXIT_USAGE, "cannot configure the S3 client")


@pytest.mark.parametrize(("index", "extra", "needle"), [
    ("ftp://x", {}, "unsupported index URL"),
    ("vectorize://idx", {}, "PREVIEWVEC_VECTORIZE_ACCOUNT_ID"),
    ("vectorize://bad name!", {"PREVIEWVEC_VECTORIZE_ACCOUNT_ID": "a",
                               "PREVIEWVEC_VECTORIZE_API_TOKEN": "t"}, "index name"),
])
def test_bad_index_url(base_env, index, extra, needle) -> None:
    for command in (["reduce"], ["similar", "x"]):
        expect_fault({**base_env, "PREVIEWVEC_INDEX": index, **extra}, command, EXIT_USAGE,
                     needle)


def test_malformed_setting_is_one_line(base_env) -> None:
    env = {**base_env, "PREVIEWVEC_QUEUE_HIGH_WATER": "lots"}
    expect_fault(env, ["status", "x"], EXIT_USAGE, "PREVIEWVEC_QUEUE_HIGH_WATER")


def test_api_without_tokens_or_port(base_env) -> None:
    expect_fault(base_env, ["api"], EXIT_USAGE, "PREVIEWVEC_API_TOKENS")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expect_fault({**base_env, "PREVIEWVEC_API_TOKENS": "t"}, ["api", "--port", str(port)],
                     EXIT_USAGE, f"cannot listen on 127.0.0.1:{port}")


# --------------------------------------------------------------------------- the store


def test_s3_endpoint_down(base_env, bucket) -> None:
    env = {**base_env, "PREVIEWVEC_STORE": f"s3://{bucket}/p",
           "AWS_ENDPOINT_URL_S3": closed_url()}
    expect_fault(env, ["reduce"], EXIT_STORE, "Could not connect to the endpoint URL")


def test_s3_missing_credentials(base_env, bucket) -> None:
    env = {k: v for k, v in base_env.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["PREVIEWVEC_STORE"] = f"s3://{bucket}/p"
    for command in (["reindex"], ["similar", "x"]):
        expect_fault(env, command, EXIT_STORE, "Unable to locate credentials",
                     "AWS_ACCESS_KEY_ID")


def test_s3_wrong_credentials(base_env, checking_moto) -> None:
    env = {**base_env, "PREVIEWVEC_STORE": "s3://any-bucket/p",
           "AWS_ENDPOINT_URL_S3": checking_moto, "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"}
    for command in (["reduce"], ["reindex"], ["similar", "x"]):
        expect_fault(env, command, EXIT_STORE, "credentials", "HTTP 403")


def test_s3_missing_bucket(base_env, bucket) -> None:
    env = {**base_env, "PREVIEWVEC_STORE": "s3://no-such-bucket-here/p",
           "PREVIEWVEC_MB_CONTACT": "tests@example.org"}
    # submit checks the store before resolving anything (it skips stored recordings).
    for command in (["reduce"], ["reindex"], ["similar", "x"],
                    ["submit", "--isrc", "USRC17607839"]):
        expect_fault(env, command, EXIT_STORE, "bucket 'no-such-bucket-here' does not exist")


def _readers(env: dict[str, str]) -> list[list[str]]:
    """The commands that only read the store: one record, and the bulk export."""
    return [["show", "some-id"],
            ["export", str(Path(env["PREVIEWVEC_INDEX"]).parent / "out.parquet")]]


@pytest.mark.parametrize(("store", "needle"), [
    ("ftp://x/features", "unsupported store URL 'ftp://x/features'"),
    ("s3://", "names no bucket"),
])
def test_store_readers_with_a_bad_store_url(base_env, store, needle) -> None:
    for command in _readers(base_env):
        expect_fault({**base_env, "PREVIEWVEC_STORE": store}, command, EXIT_USAGE, needle)


def test_store_readers_meet_s3_faults(base_env, bucket, checking_moto) -> None:
    """S3 down, no credentials, unknown credentials, no bucket: one line each, exit 4."""
    s3 = {**base_env, "PREVIEWVEC_STORE": f"s3://{bucket}/p"}
    no_keys = {k: v for k, v in s3.items()
               if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    cases = [
        ({**s3, "AWS_ENDPOINT_URL_S3": closed_url()}, "Could not connect to the endpoint URL"),
        (no_keys, "Unable to locate credentials"),
        ({**s3, "PREVIEWVEC_STORE": "s3://any-bucket/p", "AWS_ENDPOINT_URL_S3": checking_moto,
          "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000"}, "credentials"),
        ({**s3, "PREVIEWVEC_STORE": "s3://no-such-bucket-here/p"},
         "bucket 'no-such-bucket-here' does not exist"),
    ]
    for env, needle in cases:
        for command in _readers(base_env):
            expect_fault(env, command, EXIT_STORE, needle)
    assert not (Path(base_env["PREVIEWVEC_INDEX"]).parent / "out.parquet").exists()


def test_store_readers_of_a_missing_folder(base_env, tmp_path) -> None:
    """Given PREVIEWVEC_STORE naming a folder that does not exist (a typo), expect show
    and export to fail with one line naming it (exit 4) and to create nothing: no folder,
    no export file."""
    folder = tmp_path / "no-such" / "store"
    env = {**base_env, "PREVIEWVEC_STORE": str(folder)}
    for command in _readers(env):
        expect_fault(env, command, EXIT_STORE, f"no feature store at {folder}",
                     "does not exist")
    assert not (tmp_path / "no-such").exists()
    assert not (Path(env["PREVIEWVEC_INDEX"]).parent / "out.parquet").exists()


def test_store_folder_unusable(base_env) -> None:
    # A regular file where a folder should be (also fails as root, unlike a chmod).
    env = {**base_env, "PREVIEWVEC_STORE": "/etc/passwd/store"}
    # reduce, reindex and similar only read: the folder is missing, never made (a reducer
    # that made it read every queued record as vanished)
    for command in (["reduce"], ["reindex"]):
        expect_fault(env, command, EXIT_STORE, "no feature store at /etc/passwd/store")


def test_a_mistyped_store_folder_is_missing_not_made_by_a_reader(base_env) -> None:
    """`similar` and `reindex` with a store folder that does not exist (a typo): they say
    so, and leave no new empty folder behind (it "held no records" before)."""
    env = {**base_env, "PREVIEWVEC_STORE": base_env["PREVIEWVEC_STORE"] + "-typo"}
    expect_fault(env, ["similar", "some-id"], EXIT_STORE, "no feature store at")
    expect_fault(env, ["reindex"], EXIT_STORE, "no feature store at")
    assert not Path(env["PREVIEWVEC_STORE"]).exists()


# --------------------------------------------------------------------------- the index


def test_index_folder_unusable(base_env) -> None:
    env = {**base_env, "PREVIEWVEC_INDEX": "/etc/passwd"}
    expect_fault(env, ["reduce"], EXIT_INDEX, "cannot use index folder")


def test_vectorize_unreachable(base_env) -> None:
    env = {**base_env, "PREVIEWVEC_INDEX": "vectorize://idx",
           "PREVIEWVEC_VECTORIZE_ACCOUNT_ID": "acct", "PREVIEWVEC_VECTORIZE_API_TOKEN": "tok",
           "PREVIEWVEC_VECTORIZE_BASE_URL": closed_url(path="/client/v4")}
    line = expect_fault(env, ["reduce"], EXIT_INDEX, "Vectorize", "ConnectionError")
    assert "tok" not in line and "acct" not in line


# --------------------------------------------------------------------------- empty, unknown


def test_empty_store(base_env) -> None:
    assert Path(base_env["PREVIEWVEC_STORE"]).is_dir()  # a store the workers made, empty
    expect_fault(base_env, ["reindex"], EXIT_NOT_FOUND, "holds no records")
    expect_fault(base_env, ["similar", "never-stored"], EXIT_NOT_FOUND,
                 "no stored record for 'never-stored'")
    expect_fault(base_env, ["similar", ".."], EXIT_NOT_FOUND, "no stored record for '..'")


def test_a_corrupt_record_does_not_stop_reindex_or_similar(base_env) -> None:
    """Given three stored records, one truncated, expect `reindex` to index the two others
    and name the bad key on stderr, and `similar` to answer (exit 0, no traceback)."""
    store = open_store(base_env["PREVIEWVEC_STORE"])
    keys = []
    for i in range(3):
        record = synthetic_record(i)
        store.put(record.key, encode_record(record))
        keys.append(record.key)
    store.put(keys[0], store.get(keys[0])[:200])
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "reindex"],
                            env=base_env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "reindexed 2 records; index holds 2 vectors" in result.stdout
    assert keys[0] in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "similar",
                             "rec-0000001", "-k", "1"], env=base_env, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert '"recording_id": "rec-0000002"' in result.stdout


def test_empty_index(base_env) -> None:
    store = open_store(base_env["PREVIEWVEC_STORE"])
    rng = np.random.default_rng(1)
    for i in range(3):
        record = FeatureRecord(
            recording_id=f"stored-{i}", vector=rng.normal(size=VECTOR_DIM).tolist(),
            descriptors={"tempo_bpm": 100.0 + i, "key": "A", "mode": "minor"},
            provenance=make_provenance(preview_url="https://p.scdn.co/1",
                                       audio_sha256="ab" * 32, source="spotify",
                                       run_id="r1", decoder="test"))
        store.put(record.key, encode_record(record))
    expect_fault(base_env, ["similar", "stored-1"], EXIT_NOT_FOUND,
                 "the vector index holds no vectors", "previewvec reduce")
    expect_fault(base_env, ["similar", "stored-1", "--tempo-min", "nan"], EXIT_USAGE,
                 "tempo_bpm")


@pytest.mark.parametrize("command", ["status", "failures", "retry"])
def test_unknown_run(base_env, command) -> None:
    expect_fault(base_env, [command, "nosuchrun"], EXIT_NOT_FOUND, "no such run: nosuchrun")


def test_redis_lost_is_exit_3(base_env) -> None:
    # The check at start-up (tests/unit/previewvec/test_cli.py covers each command); here
    # the reducer is a one-off too.
    env = {**base_env, "PREVIEWVEC_BROKER_URL": closed_url("redis", "/0")}
    expect_fault(env, ["reindex"], EXIT_REDIS, "cannot reach Redis")


# --------------------------------------------------------------------------- input files


@pytest.mark.parametrize(("path", "reason"), [
    ("/nonexistent/catalog.jsonl", "No such file or directory"),
    ("/tmp", "Is a directory"),
    ("/etc/passwd/catalog.jsonl", "Not a directory"),
])
def test_catalog_unreadable(base_env, path, reason) -> None:
    expect_fault(base_env, ["enqueue", path], EXIT_INPUT_FILE, f"cannot read catalog {path!r}",
                 reason)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_catalog_without_permission(base_env, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("{}\n")
    catalog.chmod(0)
    expect_fault(base_env, ["enqueue", str(catalog)], EXIT_INPUT_FILE, "Permission denied")


JOB_LINE = '{"recording_id": "piped-1", "preview_url": "https://p.scdn.co/piped-1"}\n'
NOT_REGULAR = "is not a regular file"


def test_piped_catalog_is_refused_not_lost(base_env) -> None:
    # `cmd | previewvec enqueue /dev/stdin`: the hash would read the pipe and the enqueue
    # find it empty ("queued 0", the job lost). Refused up front, nothing read.
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "enqueue", "/dev/stdin"],
                            env=base_env, input=JOB_LINE, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == EXIT_INPUT_FILE, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert "'/dev/stdin' is not a regular file" in line and "save the stream to a file" in line


def test_fifo_catalog_is_refused_without_hanging(base_env, tmp_path: Path) -> None:
    fifo = tmp_path / "catalog.fifo"
    os.mkfifo(fifo)
    expect_fault(base_env, ["enqueue", str(fifo)], EXIT_INPUT_FILE, NOT_REGULAR, timeout_s=30)


@pytest.mark.parametrize(("content", "needle"), [
    (gzip.compress(JOB_LINE.encode()), "is gzip-compressed: decompress it first"),
    (JOB_LINE.encode("utf-16"), "is UTF-16 or UTF-32"),
    (JOB_LINE.encode("utf-16-be").join([b"\xfe\xff", b""]), "is UTF-16 or UTF-32"),
    (b"[" + JOB_LINE.strip().encode() + b"]\n", "is a JSON array; a catalog is JSON Lines"),
    (b'\xef\xbb\xbf\n  [\n  {"recording_id": "x"}\n]\n', "is a JSON array"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8, "is not UTF-8 text"),
    (JOB_LINE.encode() + b"\xff\xfe\x00garbage" * 40, "is not UTF-8 text"),
], ids=["gzip", "utf-16", "utf-16-be", "json-array", "indented-json-array", "audio",
        "binary-after-a-line"])
def test_catalog_in_another_format_is_refused(base_env, tmp_path: Path, content: bytes,
                                              needle: str) -> None:
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(content)
    expect_fault(base_env, ["enqueue", str(catalog)], EXIT_INPUT_FILE, needle)


def test_dump_and_output_files(base_env, tmp_path: Path) -> None:
    env = {**base_env, "PREVIEWVEC_MB_CONTACT": "tests@example.org"}
    for command in ("resolve", "submit"):
        extra = ["--out", "-"] if command == "resolve" else []
        expect_fault(env, [command, "--dump", str(tmp_path / "missing"), *extra],
                     EXIT_INPUT_FILE, "cannot read dump")
    expect_fault(env, ["resolve", "--release", "0f6ab4b4-1b5e-4bd2-8b7c-5fd5e1b3d2a1",
                       "--out", str(tmp_path / "no" / "such" / "folder.jsonl")],
                 EXIT_INPUT_FILE, "cannot write")


def test_a_binary_dump_is_refused_not_read_as_unresolved_lines(base_env,
                                                               tmp_path: Path) -> None:
    dump = tmp_path / "song.wav"
    dump.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    env = {**base_env, "PREVIEWVEC_MB_CONTACT": "tests@example.org"}
    expect_fault(env, ["resolve", "--dump", str(dump), "--out", str(tmp_path / "o.jsonl")],
                 EXIT_INPUT_FILE, "is not UTF-8 text")


def test_a_failed_resolve_leaves_the_output_file_as_it_was(base_env, tmp_path: Path) -> None:
    """Given an existing --out file and a resolve that fails (a missing dump), expect the
    file untouched and no temporary file beside it."""
    env = {**base_env, "PREVIEWVEC_MB_CONTACT": "tests@example.org"}
    out = tmp_path / "previous.jsonl"
    out.write_text('{"recording_id": "kept"}\n')
    expect_fault(env, ["resolve", "--dump", str(tmp_path / "missing"), "--out", str(out)],
                 EXIT_INPUT_FILE, "cannot read dump")
    assert out.read_text() == '{"recording_id": "kept"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous.jsonl", "store"]


def test_a_reader_that_goes_away_is_no_error(base_env, tmp_path: Path) -> None:
    """Given `previewvec runs` piped into a reader that closes at once (`| head -c 0`),
    expect no traceback and the shell's SIGPIPE status."""
    cli = f"{shlex.quote(sys.executable)} -m previewvec.cli"
    for n in range(3):  # a few runs, so that `runs` has lines to print
        catalog = tmp_path / f"empty-{n}.jsonl"
        catalog.write_text("")
        subprocess.run([sys.executable, "-m", "previewvec.cli", "enqueue", str(catalog)],
                       env=base_env, capture_output=True, timeout=120, check=True)
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {cli} runs -n 50 | head -c 0"],
                            env=base_env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode in (0, 141), (result.returncode, result.stderr)


def test_missing_mb_contact(base_env) -> None:
    expect_fault(base_env, ["submit", "--isrc", "USRC17607839"], EXIT_USAGE,
                 "PREVIEWVEC_MB_CONTACT")



def test_every_exit_status_is_documented() -> None:
    """The README's exit-status table lists exactly the statuses the CLI uses."""
    from previewvec import cli

    used = {v for k, v in vars(cli).items() if k.startswith("EXIT_") and isinstance(v, int)}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("**Exit status.**", 1)[1].split("\n\n", 2)[1]
    documented = {int(line.split("|")[1]) for line in table.splitlines()
                  if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert documented == used | {0}


# --------------------------------------------------------------------------- hardening


def _store_three(env: dict[str, str]) -> None:
    store = open_store(env["PREVIEWVEC_STORE"])
    for i in range(3):
        record = synthetic_record(i)
        store.put(record.key, encode_record(record))


def test_an_output_that_is_not_a_regular_file_is_refused_not_replaced(
        base_env, tmp_path: Path) -> None:
    """Given `export` / `resolve --out` naming a FIFO (as /dev/null or /dev/stdout would
    be a device or a pipe), expect one line and exit 7, the special file left as it was:
    the write-then-rename would put a regular file in its place (as root, in /dev too)."""
    _store_three(base_env)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    expect_fault(base_env, ["export", str(fifo)], EXIT_INPUT_FILE, NOT_REGULAR)
    env = {**base_env, "PREVIEWVEC_MB_CONTACT": "tests@example.org"}
    expect_fault(env, ["resolve", "--dump", str(tmp_path / "missing"), "--out", str(fifo)],
                 EXIT_INPUT_FILE, NOT_REGULAR)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fifo", "store"]


def test_a_malformed_broker_url_is_a_usage_error(base_env) -> None:
    """Given PREVIEWVEC_BROKER_URL with a port that is no number, expect one line naming
    the setting (its password masked) and exit 2, not a traceback."""
    env = {**base_env, "PREVIEWVEC_BROKER_URL": "redis://:hunter2@127.0.0.1:notaport/0"}
    line = expect_fault(env, ["runs"], EXIT_USAGE, "PREVIEWVEC_BROKER_URL", "not a usable")
    assert "hunter2" not in line


def test_a_database_number_redis_does_not_have(base_env) -> None:
    env = {**base_env, "PREVIEWVEC_BROKER_URL": base_env["PREVIEWVEC_BROKER_URL"]
           .rsplit("/", 1)[0] + "/99"}
    expect_fault(env, ["runs"], EXIT_REDIS, "DB index is out of range")


def test_redis_refusing_writes_is_one_line(base_env, redis_url: str, tmp_path: Path) -> None:
    """Given a Redis at its maxmemory (noeviction), expect the commands that write run
    state to say so in one line and exit 3."""
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(JOB_LINE)
    r = Redis.from_url(redis_url)
    r.config_set("maxmemory", "1")
    try:
        expect_fault(base_env, ["enqueue", str(catalog)], EXIT_REDIS, "refused",
                     "maxmemory")
    finally:
        r.config_set("maxmemory", "0")


def test_a_corrupt_index_folder_is_one_line(base_env) -> None:
    """Given an index whose data files were overwritten (a bad copy, a full disk during
    a write), expect `similar` and `reindex` to name the index in one line and exit 5,
    not LanceDB's RuntimeError traceback."""
    _store_three(base_env)
    subprocess.run([sys.executable, "-m", "previewvec.cli", "reindex"], env=base_env,
                   capture_output=True, timeout=120, check=True, stdin=subprocess.DEVNULL)
    data = list(Path(base_env["PREVIEWVEC_INDEX"]).glob("**/data/*.lance"))
    assert data
    for path in data:
        path.write_bytes(b"garbage")
    for command in (["similar", "rec-0000001"], ["reindex"]):
        line = expect_fault(base_env, command, EXIT_INDEX, "cannot read the vector index",
                            base_env["PREVIEWVEC_INDEX"])
        assert ".rs:" not in line  # no Rust source locations


@pytest.mark.parametrize(("name", "value"), [
    ("PREVIEWVEC_QUEUE_HIGH_WATER", "-1"),  # enqueue waited for "0 > -1" forever
    ("PREVIEWVEC_MB_RATE_PER_S", "nan"),  # a traceback from the rate limiter
    ("PREVIEWVEC_MB_RATE_PER_S", "0"),
    ("PREVIEWVEC_FETCH_TOTAL_TIMEOUT_S", "inf"),
    ("PREVIEWVEC_API_MAX_BODY_BYTES", "-5"),  # every request body refused with 413
])
def test_a_numeric_setting_out_of_range_is_one_line(base_env, name: str, value: str) -> None:
    expect_fault({**base_env, name: value}, ["status", "x"], EXIT_USAGE, name)


def test_an_unusable_cache_dir_is_one_line(base_env, tmp_path: Path) -> None:
    """Given PREVIEWVEC_CACHE_DIR under a regular file, expect `extract` to name the
    setting in one line and exit 2, not a NotADirectoryError traceback."""
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    env = {**base_env, "PREVIEWVEC_CACHE_DIR": "/etc/passwd/cache"}
    expect_fault(env, ["extract", str(clip)], EXIT_USAGE, "PREVIEWVEC_CACHE_DIR",
                 "Not a directory")
    # worker and flower too (from the operations review: Celery's "Unable to load celery
    # application" and four tracebacks, exit 2)
    expect_fault(env, ["worker"], EXIT_USAGE, "PREVIEWVEC_CACHE_DIR", "Not a directory")
    expect_fault({**env, "FLOWER_BASIC_AUTH": "ops:secret"}, ["flower", "--port", "0"],
                 EXIT_USAGE, "PREVIEWVEC_CACHE_DIR", "Not a directory")


def test_resolve_says_at_once_that_redis_cannot_be_reached(base_env) -> None:
    """resolve shares the upstream rate limits through Redis: with Redis down from the
    start, expect "cannot reach", not "lost Redis" (it was never reached)."""
    env = {**base_env, "PREVIEWVEC_BROKER_URL": closed_url("redis", "/0"),
           "PREVIEWVEC_MB_CONTACT": "tests@example.org"}
    expect_fault(env, ["resolve", "--isrc", "USRC17607839", "--out", "-"], EXIT_REDIS,
                 "cannot reach Redis")


RESOLVE_MANY = '''
import sys
from types import SimpleNamespace

import producers.submit as submit_mod
from contract.jobs import Job


class Many:
    def resolve_isrcs(self, isrcs):
        for i in range(5000):
            rid = f"rec-{i:06d}"
            yield SimpleNamespace(recording_id=rid, score=0.99, reason="isrc",
                                  error_code=None,
                                  job=Job(recording_id=rid,
                                          preview_url=f"https://p.scdn.co/{rid}"))


submit_mod.build_resolver = lambda settings, **kw: Many()
from previewvec.cli import main

sys.exit(main(sys.argv[1:]))
'''


def test_resolve_onto_a_full_disk_is_one_line(base_env, tmp_path: Path) -> None:
    """Given `resolve --out FILE` meeting a write error (a file-size limit: EFBIG, as a
    full disk's ENOSPC), expect one line naming FILE and exit 7, not an OSError
    traceback; the lines written before are kept, as for any failed resolve."""
    import resource
    import signal

    script = tmp_path / "resolve_many.py"
    script.write_text(RESOLVE_MANY)
    out = tmp_path / "out" / "resolved.jsonl"
    out.parent.mkdir()

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    env = {**base_env, "PREVIEWVEC_MB_CONTACT": "tests@example.org",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, str(script), "resolve", "--isrc", "USRC17607839",
                             "--out", str(out)], env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL, preexec_fn=limit_file_size)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_INPUT_FILE, (result.returncode, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("previewvec: cannot write") and str(out) in line
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["resolved.jsonl"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["features"], ["runs"]])
def test_stdout_onto_a_full_disk_is_one_line(base_env, tmp_path: Path, command) -> None:
    """Given stdout redirected to a full disk (/dev/full: every write is ENOSPC), expect
    one line and exit 7, not an OSError traceback (nor Python's "Exception ignored"
    at exit)."""
    catalog = tmp_path / "empty.jsonl"
    catalog.write_text("")
    subprocess.run([sys.executable, "-m", "previewvec.cli", "enqueue", str(catalog)],
                   env=base_env, capture_output=True, timeout=120, check=True)
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "previewvec.cli", *command],
                                env=base_env, stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, \
        result.stderr
    assert result.returncode == EXIT_INPUT_FILE, (result.returncode, result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith("previewvec: cannot write to stdout"), line


def test_demo_into_an_unusable_folder_is_one_line(base_env) -> None:
    expect_fault(base_env, ["demo", "--out", "/etc/passwd/demo"], EXIT_INPUT_FILE,
                 "cannot write", "/etc/passwd/demo")
