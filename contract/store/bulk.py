"""Reading many objects at once: concurrent GETs in key order, with bounded memory.

S3/R2 answer one GET in milliseconds but serve many in parallel, so bulk readers (export,
the normaliser's sample, reindex) keep ``threads`` requests in flight; a folder is read
in the calling thread (a file read is faster than handing it to a thread).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from contract.store.base import FeatureStore

DEFAULT_THREADS = 32


def _get_or_none(store: FeatureStore, key: str) -> bytes | None:
    try:
        return store.get(key)
    except FileNotFoundError:  # deleted between listing and reading
        return None


def read_many(store: FeatureStore, keys: Iterable[str], *, threads: int | None = None,
              ) -> Iterator[tuple[str, bytes | None]]:
    """``(key, bytes)`` for every key, in the order given; ``None`` for a key gone since.

    ``threads``: concurrent GETs (default: 32 for a remote store, 0 = this thread for a
    folder). At most ``4 × threads`` objects are held at once, whatever ``keys`` holds.
    Store errors propagate as they are raised (typed by the store).
    """
    if threads is None:
        threads = 0 if getattr(store, "root", None) is not None else DEFAULT_THREADS
    if threads <= 0:
        for key in keys:
            yield key, _get_or_none(store, key)
        return
    window = 4 * threads
    pending: deque[tuple[str, Future[bytes | None]]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store-get") as pool:
        try:
            for key in keys:
                pending.append((key, pool.submit(_get_or_none, store, key)))
                if len(pending) >= window:
                    done_key, future = pending.popleft()
                    yield done_key, future.result()
            while pending:
                done_key, future = pending.popleft()
                yield done_key, future.result()
        finally:
            for _, future in pending:  # an abandoned or failed read: stop the rest
                future.cancel()
