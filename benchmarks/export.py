"""``previewvec export``: records/s and peak RSS on synthetic catalogs, folder and S3.

Writes N synthetic records (testkit/records.py: valid records, 530 float32 dimensions,
≈ 6.3 KB of JSON each) into a folder store and, with ``--s3``, into a moto S3 server,
then runs the real ``previewvec export`` command on each and reports its wall time,
records/s and peak RSS (the child's ``ru_maxrss``). Baselines measured in the same run:
reading every record in one thread and parsing it with the standard ``json`` module
(what a plain loop over the store does), on the same store; and for S3 the server's own
ceiling: 32 threads doing nothing but GETs (no decoding, no output) on the same keys, with
the moto server's CPU per GET (one Python process serves every request).

``--matrix`` also measures ``Catalog.matrix()`` (the Python API's whole-catalog numpy
read) on the folder store: peak RSS growth over the process's size before the read,
against the matrix's own size, beside the way it was built before (a list of rows, then
``np.stack``), in the same run.

    .venv/bin/python benchmarks/export.py --records 100000 --s3
    .venv/bin/python benchmarks/export.py --records 200000 --matrix
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contract.layout import FEATURE_VERSION  # noqa: E402
from contract.records import encode_record, record_key  # noqa: E402
from testkit.records import synthetic_record  # noqa: E402

TEMPLATES = 1000  # distinct vectors; record i reuses template i % 1000 under its own id


def catalog(n: int) -> list[tuple[str, bytes]]:
    """``(key, bytes)`` of ``n`` valid records with distinct ids (fixed-width, so the
    template's id can be swapped in the encoded bytes)."""
    templates = [encode_record(synthetic_record(i)) for i in range(min(n, TEMPLATES))]
    out = []
    for i in range(n):
        rid = f"rec-{i:07d}"
        data = templates[i % TEMPLATES].replace(
            f"rec-{i % TEMPLATES:07d}".encode(), rid.encode(), 1)
        out.append((record_key(FEATURE_VERSION, rid), data))
    return out


class MotoServer:
    """``python -m moto.server`` on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        self.env = {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def fill_folder(root: Path, items: list[tuple[str, bytes]]) -> None:
    # Plain writes: the store's own put fsyncs each file, which only slows the set-up.
    for key, data in items:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def fill_s3(env: dict[str, str], bucket: str, items: list[tuple[str, bytes]]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                          aws_access_key_id="bench", aws_secret_access_key="bench",
                          region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]),
                      items))


def _peak_rss_mb(pid: int) -> float | None:
    """VmHWM, the process's peak RSS since its exec (wait4's ru_maxrss would count the
    pages the child shared with this parent, which holds the whole catalog, before exec)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_for_peak_rss_mb(proc: subprocess.Popen, interval_s: float = 0.1) -> float:
    """Wait for ``proc`` to exit; its peak RSS (MB). VmHWM only grows: the last reading
    before the exit is the peak."""
    peak = 0.0
    while True:
        try:
            proc.wait(timeout=interval_s)
        except subprocess.TimeoutExpired:
            peak = max(peak, _peak_rss_mb(proc.pid) or 0.0)
            continue
        return peak


def run_export(store: str, out: Path, env: dict[str, str]) -> dict:
    """The real CLI in a child process: wall and CPU time, peak RSS (MB)."""
    full_env = {**os.environ, **env, "PREVIEWVEC_STORE": store}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "previewvec.cli", "export", str(out)],
                            env=full_env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = wait_for_peak_rss_mb(proc)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({proc.returncode}): {stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU of every reaped child
    cpu = usage.ru_utime + usage.ru_stime - _cpu_before.pop(store, 0.0)
    # CPU seconds too: on a shared machine the wall rate depends on the neighbours, the
    # rate per CPU second much less.
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "said": stderr.strip()}


_cpu_before: dict[str, float] = {}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline(store: str, env: dict[str, str], n: int) -> float:
    """Records/s of a one-thread loop: list, GET, ``json.loads`` (in a child process, so
    the S3 client sees the same environment as the export)."""
    code = (
        "import json, sys, time\n"
        "from contract.store import open_store\n"
        "s = open_store(sys.argv[1]); t = time.perf_counter(); n = 0\n"
        f"for k in s.iter_keys('features/{FEATURE_VERSION}/'):\n"
        "    json.loads(s.get(k)); n += 1\n"
        "    if n >= int(sys.argv[2]): break\n"
        "print(n / (time.perf_counter() - t))\n")
    out = subprocess.run([sys.executable, "-c", code, store, str(n)], env={**os.environ, **env},
                         cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def ceiling(env: dict[str, str], bucket: str, keys: list[str], server_pid: int,
            threads: int = 32) -> dict[str, float]:
    """GETs/s of ``threads`` threads doing nothing but GET (the server's ceiling for any
    exporter), and the server process's CPU ms per GET meanwhile."""
    import boto3
    import psutil

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                          aws_access_key_id="bench", aws_secret_access_key="bench",
                          region_name="us-east-1")
    server = psutil.Process(server_pid)
    before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys))
    wall = time.perf_counter() - started
    return {"gets_per_s": len(keys) / wall,
            "server_cpu_ms_per_get": (sum(server.cpu_times()[:2]) - before) / len(keys) * 1e3}


MATRIX_CHILD = """
import json, sys, time
import numpy as np
import previewvec

catalog = previewvec.open(sys.argv[1])
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024
before = rss_mb()
started = time.perf_counter()
if sys.argv[2] == "api":
    matrix, ids = catalog.matrix()
else:  # the way matrix() was built until 2026-12-04
    rows, ids = [], []
    for record in catalog.records():
        rows.append(record.vector_array())
        ids.append(record.recording_id)
    matrix = np.stack(rows)
    del rows
print(json.dumps({"rows": len(matrix), "matrix_mb": matrix.nbytes / 2**20,
                  "rss_before_mb": before, "wall_s": time.perf_counter() - started}))
"""


def run_matrix(store: str, how: str) -> dict:
    """``Catalog.matrix()`` (``how="api"``) or the list-then-stack baseline in a child
    process: its peak RSS growth over its size before the read (MB)."""
    proc = subprocess.Popen([sys.executable, "-c", MATRIX_CHILD, store, how], cwd=REPO,
                            env={**os.environ, "PREVIEWVEC_STORE": store},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = wait_for_peak_rss_mb(proc)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"matrix child failed ({proc.returncode}): {err}")
    res = json.loads(out)
    res["peak_growth_mb"] = peak - res["rss_before_mb"]
    return res


def verify(out: Path, n: int) -> None:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(out)
    assert meta.num_rows == n, (meta.num_rows, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--s3", action="store_true", help="also from a moto S3 server")
    parser.add_argument("--matrix", action="store_true",
                        help="also Catalog.matrix()'s peak memory (folder store)")
    parser.add_argument("--baseline-records", type=int, default=10_000,
                        help="records the one-thread baseline reads (it is slow on S3)")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    items = catalog(args.records)
    print(f"{len(items)} records, {sum(len(d) for _, d in items) / 1e6:.0f} MB of JSON",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pv-export-bench-") as tmp:
        work = Path(tmp)
        folder = work / "store"
        fill_folder(folder, items)
        _cpu_before[str(folder)] = children_cpu_s()
        res = run_export(str(folder), work / "folder.parquet", {})
        verify(work / "folder.parquet", args.records)
        res["records_per_s"] = args.records / res["wall_s"]
        res["baseline_records_per_s"] = baseline(str(folder), {}, args.baseline_records)
        res["parquet_mb"] = (work / "folder.parquet").stat().st_size / 1e6
        results["folder"] = res
        print(json.dumps({"folder": res}), file=sys.stderr, flush=True)
        if args.matrix:
            matrices = {how: run_matrix(str(folder), how) for how in ("list+stack", "api")}
        if args.s3:
            moto = MotoServer()
            try:
                fill_s3(moto.env, "bench", items)
                _cpu_before["s3://bench"] = children_cpu_s()
                res = run_export("s3://bench", work / "s3.parquet", moto.env)
                verify(work / "s3.parquet", args.records)
                res["records_per_s"] = args.records / res["wall_s"]
                res["baseline_records_per_s"] = baseline("s3://bench", moto.env,
                                                         args.baseline_records)
                res.update(ceiling(moto.env, "bench",
                                   [k for k, _ in items[:args.baseline_records]], moto.proc.pid))
                results["s3 (moto)"] = res
                print(json.dumps({"s3": res}), file=sys.stderr, flush=True)
            finally:
                moto.stop()
    print(f"{'store':<10} {'records':>8} {'wall s':>8} {'records/s':>10} {'per CPU-s':>10} "
          f"{'1-thread json loop/s':>21} {'ratio':>6} {'peak RSS MB':>12}")
    for name, r in results.items():
        print(f"{name:<10} {args.records:>8} {r['wall_s']:>8.1f} {r['records_per_s']:>10.0f} "
              f"{args.records / r['cpu_s']:>10.0f} "
              f"{r['baseline_records_per_s']:>21.0f} "
              f"{r['records_per_s'] / r['baseline_records_per_s']:>6.1f} "
              f"{r['peak_rss_mb']:>12.0f}")
        if "gets_per_s" in r:
            print(f"{'':<10} server ceiling: {r['gets_per_s']:.0f} bare GETs/s with 32 threads "
                  f"(moto: {r['server_cpu_ms_per_get']:.2f} CPU ms per GET, one process); "
                  f"export at {r['records_per_s'] / r['gets_per_s']:.2f} of it")
    if args.matrix:
        print(f"\nCatalog.matrix(), folder store, {args.records} records "
              "(peak RSS growth over the process before the read):")
        print(f"{'built as':<28} {'rows':>8} {'matrix MB':>10} {'peak growth MB':>15} "
              f"{'x matrix':>9} {'wall s':>7}")
        for how, m in matrices.items():
            name = "list of rows, np.stack" if how == "list+stack" else "matrix() (np.fromiter)"
            print(f"{name:<28} {m['rows']:>8} {m['matrix_mb']:>10.0f} "
                  f"{m['peak_growth_mb']:>15.0f} {m['peak_growth_mb'] / m['matrix_mb']:>9.2f} "
                  f"{m['wall_s']:>7.1f}")
        results["matrix"] = matrices
    print(json.dumps(results, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
