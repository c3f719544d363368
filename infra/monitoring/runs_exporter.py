"""Prometheus exporter for previewvec run bookkeeping: outcomes by state and error code.

Flower cannot show failures by error code: a job that fails with ``http_404`` or
``undecodable`` is a *successful* Celery task whose result says ``status: failed`` (only
crashes and time limits are Celery failures). The codes live in Redis, in each run's
bookkeeping (contract.state), so this exporter reads them from there.

    python /opt/previewvec/runs_exporter.py [--port 9808] [--runs 20]

Metrics (for the ``--runs`` most recent runs):

- ``previewvec_run_recordings{run_id,state}``  recordings per state (queued/done/skipped/failed)
- ``previewvec_run_failures{run_id,code}``     current failures per error code
- ``previewvec_queue_length{queue}``           ondemand, batch (Celery) and ready (reducer)
- ``previewvec_exporter_scrape_errors_total``  scrapes that could not read Redis

A run's failure hash is re-read only when its failed count changed since the last scrape.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from contract.settings import Settings
from contract.state import STATES, Runs

CELERY_QUEUES = ("ondemand", "batch")


class RunsCollector(Collector):
    def __init__(self, runs: Runs, recent: int = 20) -> None:
        self.runs = runs
        self.recent = recent
        self.errors = 0
        self._codes: dict[str, tuple[int, Counter[str]]] = {}  # run -> (failed, by code)

    def _failure_codes(self, run_id: str, failed: int) -> Counter[str]:
        cached = self._codes.get(run_id)
        if cached and cached[0] == failed:
            return cached[1]
        codes = Counter(entry.get("code", "unknown") for _, entry in self.runs.failures(run_id))
        self._codes[run_id] = (failed, codes)
        return codes

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        states = GaugeMetricFamily("previewvec_run_recordings",
                                   "Recordings of a run in each state", labels=["run_id", "state"])
        failures = GaugeMetricFamily("previewvec_run_failures",
                                     "Current failures of a run by error code",
                                     labels=["run_id", "code"])
        queues = GaugeMetricFamily("previewvec_queue_length", "Jobs waiting in a Redis list",
                                   labels=["queue"])
        try:
            run_ids = self.runs.recent_runs(self.recent)
            for run_id in run_ids:
                status = self.runs.status(run_id)
                for state in STATES:
                    states.add_metric([run_id, state], status.counts.get(state, 0))
                failed = status.counts.get("failed", 0)
                for code, n in sorted(self._failure_codes(run_id, failed).items()):
                    failures.add_metric([run_id, code], n)
            self._codes = {k: v for k, v in self._codes.items() if k in run_ids}
            for queue in CELERY_QUEUES:
                queues.add_metric([queue], self.runs.list_length(queue))
            queues.add_metric(["ready"], self.runs.ready_depth())
        except Exception:  # Redis unreachable: report it, keep serving
            self.errors += 1
        else:
            yield states
            yield failures
            yield queues
        errors = CounterMetricFamily("previewvec_exporter_scrape_errors",
                                     "Scrapes that could not read Redis")
        errors.add_metric([], self.errors)
        yield errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="previewvec runs exporter")
    parser.add_argument("--port", type=int, default=9808)
    parser.add_argument("--runs", type=int, default=20, help="most recent runs to export")
    args = parser.parse_args(argv)
    runs = Runs.from_url(Settings.from_env().broker_url)
    REGISTRY.register(RunsCollector(runs, args.runs))
    start_http_server(args.port)
    print(f"runs exporter on :{args.port}/metrics", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
