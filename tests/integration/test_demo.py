"""``previewvec demo`` stops at once, and says why, when its workers crash.

Given workers that die (a segfault while warming the extractor, injected through a
``sitecustomize`` module on ``PYTHONPATH`` that acts only in Celery processes), expect the
demo to exit non-zero naming the signal and the phase, without waiting out its timeout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from previewvec.demo import WorkerWatch
from tests.harness.pipeline import REPO, clean_env

pytestmark = pytest.mark.slow

# Segfaults a Celery process when it imports the extractor (its warm-up), nothing else.
CRASH_ON_WARM_UP = '''
import os, signal, sys
if "workers.app" in sys.argv:  # celery -A workers.app worker (not the demo itself)
    class _Crash:
        def find_spec(self, name, path=None, target=None):
            if name == "workers.features.extractor":
                os.kill(os.getpid(), signal.SIGSEGV)
            return None
    sys.meta_path.insert(0, _Crash())
'''


def test_demo_names_a_worker_crash_while_warming_and_exits_non_zero(tmp_path: Path) -> None:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(CRASH_ON_WARM_UP)
    env = {**clean_env(), "PYTHONPATH": str(inject),
           "PREVIEWVEC_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "previewvec.cli", "demo", "--out", str(tmp_path / "demo")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "killed by SIGSEGV while warming the extractor" in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "all services stopped" not in result.stdout


def _process(tmp_path: Path, code: str, log_text: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "worker.log"
    log.write_text(log_text)
    proc = subprocess.Popen([sys.executable, "-c", code])
    return proc, log


def test_watch_names_a_dead_worker_and_its_phase(tmp_path: Path) -> None:
    proc, log = _process(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                         "warming the extractor\nextractor warm in 2.0 s\n")
    proc.wait(timeout=30)
    problem = WorkerWatch([proc], [log]).problem()
    assert problem is not None
    assert problem.startswith("worker demo1 killed by SIGKILL while running jobs")


def test_watch_names_a_pool_child_killed_by_a_signal(tmp_path: Path) -> None:
    proc, log = _process(tmp_path, "import time; time.sleep(60)",
                         "warming the extractor\nextractor warm in 2.0 s\n[ERROR/MainProcess] "
                         "Process 'ForkPoolWorker-1' pid:4242 exited with 'signal 11 (SIGSEGV)'\n")
    try:
        watch = WorkerWatch([proc], [log])
        assert watch.problem() == (f"worker demo1: pool child killed by SIGSEGV (signal 11) "
                                   f"while running jobs (log: {log})")
    finally:
        proc.kill()
        proc.wait()


def test_watch_sees_nothing_wrong_in_a_healthy_worker(tmp_path: Path) -> None:
    proc, log = _process(tmp_path, "import time; time.sleep(60)", "warming the extractor\n")
    try:
        watch = WorkerWatch([proc], [log])
        assert watch.problem() is None
        assert watch.phase(0) == "while warming the extractor"
    finally:
        proc.kill()
        proc.wait()
