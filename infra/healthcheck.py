"""Container health check for every previewvec role (the image's HEALTHCHECK).

    python /opt/previewvec/healthcheck.py [worker|reducer|api|flower|broker]

Without an argument the role is read from the container's command line (PID 1 is
``tini -- <command>``). Exit 0 healthy, 1 unhealthy; one line of explanation on stdout.

- worker: the Celery node ``celery@<hostname>`` answers a broadcast ping (the same check
  as ``celery -A workers.app inspect ping -d celery@$HOSTNAME``); while the broker itself
  does not answer, healthy: the worker reconnects by itself, and a liveness probe that
  failed then would restart every worker of the deployment for an outage of Redis;
- flower: ``GET /healthcheck`` returns ``OK``;
- api: ``GET /healthz`` (the broker is reachable) returns 200 on ``--port`` (default 8000);
- reducer: ``reduce --follow`` touched its heartbeat within ``STALE_AFTER_S``
  (reducer/liveness.py; the loop waits out outages itself, so the services are not
  asked); a one-shot ``reduce`` is healthy while it runs;
- anything else: the broker (PREVIEWVEC_BROKER_URL) answers PING.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 10.0


def detect_role(argv: list[str]) -> str:
    if "flower" in argv:
        return "flower"
    if "worker" in argv:
        return "worker"
    if "api" in argv:
        return "api"
    if "reduce" in argv:
        return "reducer"
    return "broker"


def command_line() -> list[str]:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def option(argv: list[str], name: str, default: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def check_worker(argv: list[str]) -> tuple[bool, str]:
    # A bare Celery client on the same broker: a broadcast ping needs nothing of
    # workers.app, whose import (numba, the cache set-up) costs seconds of CPU per check.
    from celery import Celery
    from redis.exceptions import RedisError

    from contract.settings import Settings
    from contract.state import ping

    broker_url = Settings.from_env().broker_url
    node = option(argv, "--hostname", "celery@%h").replace("%h", socket.gethostname())
    try:
        ping(broker_url, timeout_s=TIMEOUT_S / 2)
    except RedisError as exc:  # down, slow or refusing us: not this worker's fault
        return True, f"{node}: broker unreachable ({exc}); the worker reconnects by itself"
    app = Celery("healthcheck", broker=broker_url)
    replies = app.control.ping(destination=[node], timeout=TIMEOUT_S / 2)
    return bool(replies), f"{node}: {replies or 'no reply'}"


def check_reducer(argv: list[str]) -> tuple[bool, str]:
    from contract.settings import Settings
    from reducer.liveness import STALE_AFTER_S, heartbeat_age_s, heartbeat_path

    if "--follow" not in argv:
        return True, "one-shot reduce: no follow loop to watch"
    path = heartbeat_path(Settings.from_env())
    age = heartbeat_age_s(path)
    if age is None:
        return False, f"no heartbeat at {path}"
    return age <= STALE_AFTER_S, f"follow loop last beat {age:.0f} s ago (stale after " \
                                 f"{STALE_AFTER_S:.0f} s)"


def check_flower(argv: list[str]) -> tuple[bool, str]:
    port = option(argv, "--port", os.environ.get("FLOWER_PORT", "5555"))
    status = http_status(f"http://127.0.0.1:{port}/healthcheck")
    return status == 200, f"flower /healthcheck: {status}"


def check_api(argv: list[str]) -> tuple[bool, str]:
    port = option(argv, "--port", "8000")
    status = http_status(f"http://127.0.0.1:{port}/healthz")
    return status == 200, f"api /healthz on :{port}: HTTP {status}"


def check_broker(argv: list[str]) -> tuple[bool, str]:
    from contract.settings import Settings
    from contract.state import ping

    return ping(Settings.from_env().broker_url, timeout_s=TIMEOUT_S), "broker answers PING"


CHECKS = {"worker": check_worker, "flower": check_flower, "api": check_api,
          "reducer": check_reducer, "broker": check_broker}


def main(args: list[str]) -> int:
    argv = command_line()
    role = args[0] if args else detect_role(argv)
    try:
        ok, detail = CHECKS[role](argv)
    except Exception as exc:  # any failure to check is unhealthy, with its reason
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    print(f"{role}: {'healthy' if ok else 'UNHEALTHY'} — {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
