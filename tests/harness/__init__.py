"""The one harness of the real-process tests (tests/integration/ and tests/faults/).

- :mod:`tests.harness.pipeline`: a private ``redis-server``, ``celery worker``
  subprocesses, the clip server, numba's compiled-extractor cache shared across sessions,
  the CLI as a subprocess, and polls with deadlines (:meth:`Pipeline.wait_until`,
  :func:`wait_http`).
- :mod:`tests.harness.faults`: fault injection on top of it (a Redis that persists and
  restarts, a TCP proxy that takes S3 down, a clip server that turns slow or flaps, the
  reducer as a process) and the exactly-once audit of store and index.

Plain classes and functions, no fixtures: each test tier keeps its fixtures in its own
conftest.py.
"""
