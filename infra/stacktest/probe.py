"""Read the stack's state from inside a previewvec container, for ./dev stack-test.

    docker compose exec -T api python - COMMAND [ARGS] < infra/stacktest/probe.py

Prints one JSON object. Commands:
  status RUN_ID...       run counts (queued/done/skipped/failed) and failures per run
  progress RUN_ID PREFIX status and tally in one process (one exec per poll)
  tally PREFIX           recordings under PREFIX in the store and in the index, with the
                         ids found more than once in the index (rows, not distinct ids)
  queues                 LLEN of every Redis list kombu keeps for the worker queues
  similar ID TOKEN       GET /v1/similar/ID?k=5 on this container's API
  prometheus PATH        GET http://prometheus:9090PATH (the Prometheus HTTP API)
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections import Counter

from contract.settings import Settings


def status(run_ids: list[str]) -> dict:
    from contract.state import Runs

    runs = Runs.from_url(Settings.from_env().broker_url)
    out = {}
    for run_id in run_ids:
        counts = runs.status(run_id).counts
        failures = [{"id": rid, **entry} for rid, entry in runs.failures(run_id)]
        out[run_id] = {"counts": counts, "failures": failures[:10]}
    return out


def tally(prefix: str) -> dict:
    import lancedb

    from contract.layout import FEATURE_VERSION
    from contract.store import open_store

    settings = Settings.from_env()
    store = open_store(settings.store, settings)
    # Keys are features/<version>/<shard>/<id>.json (contract.records.record_key).
    names = (k.rsplit("/", 1)[-1].removesuffix(".json")
             for k in store.iter_keys(f"features/{FEATURE_VERSION}/"))
    stored = sorted(n for n in names if n.startswith(prefix))
    try:
        table = lancedb.connect(settings.index).open_table("vectors")
        ids = [i for i in table.to_arrow().column("id").to_pylist() if i.startswith(prefix)]
    except (ValueError, FileNotFoundError):  # no table yet: nothing reduced
        ids = []
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    return {"store": len(stored), "store_keys": stored[:3], "index_rows": len(ids),
            "index_ids": len(set(ids)), "repeated_in_index": repeated}


def queues() -> dict:
    from contract.broker import QUEUES, queue_keys
    from contract.state import connect

    client = connect(Settings.from_env().broker_url)
    return {key: client.llen(key) for q in QUEUES for key in queue_keys(q)}


def get_json(url: str, token: str | None = None) -> dict:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def main(args: list[str]) -> int:
    command, rest = args[0], args[1:]
    if command == "status":
        out = status(rest)
    elif command == "tally":
        out = tally(rest[0])
    elif command == "progress":
        out = {**status([rest[0]])[rest[0]], "tally": tally(rest[1])}
    elif command == "queues":
        out = queues()
    elif command == "similar":
        out = get_json(f"http://127.0.0.1:8000/v1/similar/{rest[0]}?k=5", rest[1])
    elif command == "prometheus":
        out = get_json(f"http://prometheus:9090{rest[0]}")
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
