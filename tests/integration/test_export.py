"""``previewvec export``, ``show`` and ``runs`` as real processes: from the folder store
and from a real S3 API (moto's server), interrupted, and on the faults a user meets."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from contract.layout import FEATURE_VERSION
from contract.records import encode_record
from contract.state import Runs
from contract.store.local import LocalStore
from previewvec.cli import EXIT_INPUT_FILE, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_STORE
from testkit.records import synthetic_record
from tests.conftest import MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY, free_port

N = 300
REPO = Path(__file__).resolve().parents[2]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "previewvec.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess[str], status: int, needle: str) -> None:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("previewvec: "), result.stderr
    assert needle in lines[0], lines[0]


@pytest.fixture
def env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PREVIEWVEC_", "AWS_"))}
    store = LocalStore(tmp_path / "store")
    for i in range(N):
        record = synthetic_record(i, run_id="run-1" if i < 100 else "run-2")
        store.put(record.key, encode_record(record))
    return {**clean, "PREVIEWVEC_STORE": str(store.root), "PREVIEWVEC_BROKER_URL": redis_url,
            "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true"}


def test_export_from_the_folder_store_and_of_one_run(env: dict[str, str], tmp_path: Path,
                                                      ) -> None:
    result = cli(env, "export", str(tmp_path / "all.parquet"))
    assert result.returncode == 0, result.stderr
    assert f"exported {N} records of {FEATURE_VERSION}" in result.stderr
    assert pq.read_metadata(tmp_path / "all.parquet").num_rows == N
    result = cli(env, "export", str(tmp_path / "run.parquet"), "--run", "run-1")
    assert result.returncode == 0, result.stderr
    runs = pq.read_table(tmp_path / "run.parquet", columns=["run_id"]).column("run_id")
    assert runs.to_pylist() == ["run-1"] * 100


def test_export_from_s3(env: dict[str, str], tmp_path: Path, moto_endpoint: str) -> None:
    aws = {"AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
           "AWS_REGION": MOTO_REGION, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name=MOTO_REGION,
                          aws_access_key_id=MOTO_ACCESS_KEY,
                          aws_secret_access_key=MOTO_SECRET_KEY)
    client.create_bucket(Bucket="pv-export")
    for path in Path(env["PREVIEWVEC_STORE"]).rglob("*.json"):
        key = "cat/" + str(path.relative_to(env["PREVIEWVEC_STORE"]))
        client.put_object(Bucket="pv-export", Key=key, Body=path.read_bytes())
    result = cli({**env, **aws, "PREVIEWVEC_STORE": "s3://pv-export/cat"}, "export",
                 str(tmp_path / "s3.parquet"))
    assert result.returncode == 0, result.stderr
    folder = cli(env, "export", str(tmp_path / "folder.parquet"))
    assert folder.returncode == 0
    assert pq.read_table(tmp_path / "s3.parquet").equals(
        pq.read_table(tmp_path / "folder.parquet"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: s.name)
def test_an_interrupted_export_leaves_no_file(env: dict[str, str], tmp_path: Path,
                                              signum: signal.Signals) -> None:
    """Given SIGINT (Ctrl-C), SIGTERM (a stopped container) or SIGHUP (a closed terminal)
    while the export is writing (its temporary file exists), expect exit 130, one line,
    and no file: neither the target nor the temporary one."""
    out = tmp_path / "out" / "x.parquet"
    out.parent.mkdir()
    slow = {**env, "PREVIEWVEC_STORE": str(tmp_path / "store")}
    for i in range(N, 20_000):  # enough records that the export is caught mid-way
        record = synthetic_record(i)
        path = Path(slow["PREVIEWVEC_STORE"], record.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_record(record))
    proc = subprocess.Popen([sys.executable, "-m", "previewvec.cli", "export", str(out)],
                            env=slow, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(out.parent.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended early"
        time.sleep(0.01)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, stderr
    assert stderr.count("\n") == 1 and "nothing written" in stderr
    assert list(out.parent.iterdir()) == []


def test_export_faults_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    one_line(cli(env, "export", str(tmp_path / "nope" / "x.parquet")), EXIT_INPUT_FILE,
             "cannot write")
    one_line(cli(env, "export", str(tmp_path / "x.parquet"), "--version", "pv9"),
             EXIT_NOT_FOUND, "no records of feature version pv9")
    one_line(cli(env, "export", str(tmp_path / "x.parquet"), "--run", "run-404"),
             EXIT_NOT_FOUND, "run-404")
    down = {**env, "PREVIEWVEC_STORE": "s3://bucket/p", "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"}
    one_line(cli(down, "export", str(tmp_path / "x.parquet")), EXIT_STORE, "connect")
    assert not (tmp_path / "x.parquet").exists()


def test_an_export_that_cannot_grow_its_file_is_one_line(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    """Given a write that fails mid-export (a file-size limit: the same OSError path as a
    full disk), expect exit 7, one line naming the cause, and no file left behind."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "out" / "x.parquet"
    out.parent.mkdir()
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "export", str(out)],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL, preexec_fn=limit)
    one_line(result, EXIT_INPUT_FILE, "File too large")
    assert list(out.parent.iterdir()) == []


def test_show_one_record_readably(env: dict[str, str]) -> None:
    result = cli(env, "show", "rec-0000007")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "recording_id     rec-0000007" in out and "tempo_bpm" in out and "run-1" in out
    assert "530 dimensions" in out and "chroma_cens.kurtosis.01" in out
    full = cli(env, "show", "rec-0000007", "--vector")
    assert full.stdout.count("\n") > 530
    one_line(cli(env, "show", "rec-404"), EXIT_NOT_FOUND, "no stored record for 'rec-404'")


def test_show_of_a_record_holding_nan_names_the_key(env: dict[str, str]) -> None:
    record = synthetic_record(7)
    path = Path(env["PREVIEWVEC_STORE"], record.key)
    path.write_bytes(path.read_bytes().replace(b'"vector":[', b'"vector":[NaN,', 1))
    one_line(cli(env, "show", "rec-0000007"), 1, f"stored record {record.key}: record holds "
             "a non-finite number (NaN)")


def test_runs_lists_recent_runs_with_counts(env: dict[str, str], redis_url: str) -> None:
    runs = Runs.from_url(redis_url)
    runs.create("20260101T000000Z-aaaaaa", input="catalog")
    runs.mark_many_queued("20260101T000000Z-aaaaaa", ["a", "b", "c"])
    runs.succeed("20260101T000000Z-aaaaaa", "a", "done")
    runs.fail("20260101T000000Z-aaaaaa", "b", "http_404", "gone", {"recording_id": "b"})
    result = cli(env, "runs")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "20260101T000000Z-aaaaaa" in x)
    assert line.split()[3:8] == ["3", "1", "1", "0", "1"]  # total queued done skipped failed
    assert line.endswith("open")


def test_runs_says_a_run_whose_keys_expired_is_gone(env: dict[str, str],
                                                    redis_url: str) -> None:
    """Given a closed run whose keys expired before housekeeping pruned it from the index,
    expect ``runs`` to call it expired, not an open run of 0 recordings."""
    from contract.state.keys import run_key

    runs = Runs.from_url(redis_url)
    runs.create("20260102T000000Z-bbbbbb", input="catalog")
    runs._redis.delete(run_key("20260102T000000Z-bbbbbb", "meta"))  # as its TTL would
    result = cli(env, "runs")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "20260102T000000Z-bbbbbb" in x)
    assert line.endswith("expired"), line


def test_export_from_s3_skips_objects_that_are_no_store_keys(tmp_path: Path,
                                                             aws_test_env: str) -> None:
    """Given an S3 prefix also holding a console "folder" marker (``features/v/``), a
    hidden file and a ``//`` key, objects no store key can name, expect the export (and
    the Python API) to read every record around them, as a folder store would."""
    import previewvec
    from contract.settings import Settings
    from previewvec.export import export_parquet

    client = boto3.client("s3", endpoint_url=aws_test_env, region_name=MOTO_REGION)
    client.create_bucket(Bucket="pv-foreign")
    catalog = previewvec.open(settings=Settings(store="s3://pv-foreign/cat",
                                                index=str(tmp_path / "index")))
    for i in range(3):
        record = synthetic_record(i, version=catalog.version)
        catalog.store.put(record.key, encode_record(record))
    for key in (f"features/{catalog.version}/", f"features/{catalog.version}/ab/.DS_Store",
                f"features/{catalog.version}//x.json"):
        client.put_object(Bucket="pv-foreign", Key=f"cat/{key}", Body=b"")
    ids = [f"rec-{i:07d}" for i in range(3)]
    assert sorted(catalog.matrix()[1]) == ids
    report = export_parquet(catalog.store, tmp_path / "s3.parquet", version=catalog.version)
    assert report.rows == 3
    assert sorted(pq.read_table(tmp_path / "s3.parquet").column("recording_id").to_pylist()
                  ) == ids
