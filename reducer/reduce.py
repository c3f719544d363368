"""The reducer: ready records → normalised vectors → the vector index, in batches.

Idempotent by construction: entries leave the ready queue only after their batch was
upserted, and upserts replace by id. A reducer killed mid-batch leaves the batch queued;
the next run upserts it again, which changes nothing. A Redis lock keeps one reducer
active at a time, so the queue is consumed in order. Entries marked "if absent" (records
found already stored) are upserted only when the index does not hold them yet: the index
itself, not a set in Redis, says what is indexed.

The reducer is also the runs' housekeeper: it closes finished runs (their state shrinks
to counts and failures, and expires) and prunes expired ones from ``pv:runs``.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract.errors import InvalidQuery, NothingStored, VectorIndexError
from contract.jobs import vector_id
from contract.layout import DESCRIPTORS, VECTOR_DIM
from contract.records import (
    CorruptRecord,
    FeatureRecord,
    IncompatibleRecord,
    decode_stored,
    record_key,
    recording_id_of_key,
    utc_now_iso,
)
from contract.retry import Backoff
from contract.settings import Settings
from contract.state import (  # noqa: F401 - LOCK_KEY, DEAD_LETTER_QUEUE: re-exported
    DEAD_LETTER_QUEUE,
    LOCK_KEY,
    Housekeeping,
    RedisError,
    Runs,
    parse_ready_entry,
    redis_outage,
)
from contract.store import FeatureStore, StoreFolderMissing, StoreUnavailable, open_store
from contract.store.bulk import read_many
from contract.versions import current_version
from reducer.index import (
    IndexItem,
    IndexUnavailable,
    InvalidIndexItem,
    Match,
    VectorIndex,
    open_index,
)
from reducer.index.base import check_items, check_k, check_query_vector, normalize_filter
from reducer.liveness import Heartbeat
from reducer.normalize import (
    Normalizer,
    indexed_marker_key,
    needs_refit,
    normalizer_history_key,
    normalizer_key,
    reservoir_sample,
)

log = logging.getLogger(__name__)

# Short, and renewed every LOCK_TTL_S / 3 while a batch is in progress: a reducer that
# dies (SIGKILL, lost node) blocks the next one for at most this long, while a slow batch
# (Vectorize upserts with retries, a normaliser fit) keeps its lock as long as it lives.
# The lock itself (token, renew, release, trim under it) is contract/state/lock.py's.
LOCK_TTL_S = 15
# A process that only queries (the API) reloads the stored normaliser this often, so a
# reducer's refit reaches its queries.
NORMALIZER_RELOAD_S = 60.0
# How often `reduce --follow` closes finished runs and prunes expired ones (a pass costs
# one Redis round trip per 500 runs).
HOUSEKEEPING_EVERY_S = 60.0
OUTAGE_BACKOFF_CAP_S = 30.0
OUTAGE_BACKOFF = Backoff(base_s=1.0, cap_s=OUTAGE_BACKOFF_CAP_S)  # contract.retry policy


def similar_filter(*, tempo_min: float | None = None, tempo_max: float | None = None,
                   key: str | None = None, mode: str | None = None) -> dict[str, Any] | None:
    """The index filter of a similar-recordings query (CLI and API); None: no filter.

    A tempo range that can hold nothing (``tempo_min`` above ``tempo_max``) is refused,
    as the Python API refuses it, rather than answered with no neighbours."""
    if tempo_min is not None and tempo_max is not None and tempo_min > tempo_max:
        raise InvalidQuery(f"tempo_min {tempo_min:g} is above tempo_max {tempo_max:g}: no "
                           "recording can match")
    where: dict[str, Any] = {}
    tempo = {op: v for op, v in (("$gte", tempo_min), ("$lte", tempo_max)) if v is not None}
    if tempo:
        where["tempo_bpm"] = tempo
    if key:
        where["key"] = key
    if mode:
        where["mode"] = mode
    normalize_filter(where)  # a value the index refuses (NaN) is refused before any I/O
    return where or None


def match_descriptors(match: Match) -> dict[str, Any]:
    """The descriptors a similar-recordings match shows (its metadata minus our own keys)."""
    return {k: v for k, v in match.metadata.items() if k not in ("recording_id", "normalizer")}


@dataclass
class Reducer:
    settings: Settings
    store: FeatureStore
    index: VectorIndex
    runs: Runs
    _normalizer: Normalizer | None = None
    lock_ttl_s: float = LOCK_TTL_S
    _normalizer_loaded_at: float = float("-inf")
    _indexed_with: str | None = None  # the marker, as last read or written
    _legacy_sets_dropped: bool = False

    @classmethod
    def build(cls, settings: Settings, *, create_store: bool = True,
              create_index: bool = True, probe_store: bool = True) -> Reducer:
        """The reducer of ``settings``. ``create_store=False`` for queries, reindexing and
        reducing: they only read the store, and a mistyped folder is
        ``store_folder_missing``, not a new empty folder that "holds no records" (a
        reducer reading one dropped every queued record as missing); ``create_index=False``
        for queries: an index not made yet is ``NothingStored``, not made by the query. A
        store only read is probed first (S3: HEAD the bucket), so its fault is the one
        reported; ``probe_store=False`` leaves that to the first read (``reduce --follow``
        waits for a store that is not there yet)."""
        store = open_store(settings.store, settings, create=create_store)
        check = getattr(store, "check", None)
        if not create_store and probe_store and check is not None:
            check()
        return cls(
            settings=settings,
            store=store,
            index=open_index(settings.index, settings, VECTOR_DIM, create=create_index),
            runs=Runs.from_url(settings.broker_url),
        )

    @property
    def version(self) -> str:
        """The feature version this reducer indexes (contract/versions.py)."""
        return current_version(self.settings)

    # --- normaliser ---------------------------------------------------------------------
    def normalizer(self, *, refit: bool = False, fit_missing: bool = True) -> Normalizer:
        """The stored normaliser (reloaded every ``NORMALIZER_RELOAD_S``), fitted from a
        sample of stored records the first time it is needed or when ``refit``;
        ``fit_missing=False``: FileNotFoundError when none is stored, and
        :class:`CorruptRecord` when the stored one cannot be read; otherwise an unreadable
        one is fitted anew (it is derived data, and the reducer must not stop on it)."""
        fresh = time.monotonic() - self._normalizer_loaded_at < NORMALIZER_RELOAD_S
        if self._normalizer is not None and not refit and fresh:
            return self._normalizer
        if not refit:
            key = normalizer_key(self.version)
            try:
                self._normalizer = Normalizer.from_json(self.store.get(key))
            except FileNotFoundError:
                if not fit_missing:
                    raise FileNotFoundError(key) from None
            except CorruptRecord as exc:
                if not fit_missing:
                    raise CorruptRecord(f"{key}: {exc.message}; `previewvec reindex --refit` "
                                        "fits a new one") from None
                log.error("%s: %s; fitting a new one", key, exc.message)
            else:
                self._normalizer_loaded_at = time.monotonic()
                return self._normalizer
        return self._fit()

    def _fit(self) -> Normalizer:
        """Fit on a reservoir sample of at most ``normalizer_sample`` stored records and
        store it (current, and in the history under its own version)."""
        size = max(1, self.settings.normalizer_sample)
        prefix = f"features/{self.version}/"
        keys, catalog = reservoir_sample(self.store.iter_keys(prefix), size)
        vectors = [rec.vector_array() for rec in self._read(sorted(keys))]
        if len(vectors) < len(keys) and catalog > len(keys):
            # The sample is seeded: a corrupt (or vanished) record in it would be drawn
            # again by every refit, so records outside it, in key order, take its place.
            sampled = set(keys)
            others = (key for key in self.store.iter_keys(prefix) if key not in sampled)
            while len(vectors) < len(keys):
                more = list(itertools.islice(others, len(keys) - len(vectors)))
                if not more:
                    break
                vectors += [rec.vector_array() for rec in self._read(more)]
        if not vectors:
            readable = "readable " if catalog else ""  # all there are corrupt: say so
            raise NothingStored(f"the feature store holds no {readable}records of feature "
                                f"version {self.version} to fit a normaliser on")
        fitted = Normalizer.fit(np.stack(vectors), self.version, catalog_size=catalog,
                                fitted_at=utc_now_iso())
        data = fitted.to_json()
        self.store.put(normalizer_history_key(self.version, fitted.version), data)
        self.store.put(normalizer_key(self.version), data)
        self._normalizer, self._normalizer_loaded_at = fitted, time.monotonic()
        log.info("fitted normaliser %s on a sample of %d of %d records", fitted.version,
                 len(vectors), catalog)
        return fitted

    def indexed_with(self) -> str | None:
        """The normaliser the whole index was last normalised with (None: unknown)."""
        try:
            return json.loads(self.store.get(indexed_marker_key(
                self.version, self.settings.index)))["normalizer"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _mark_indexed(self, normalizer: Normalizer) -> None:
        self.store.put(indexed_marker_key(self.version, self.settings.index),
                       json.dumps({"normalizer": normalizer.version}).encode())
        self._indexed_with = normalizer.version

    def maintain_normalizer(self) -> bool:
        """Keep the index normalised by the current normaliser; True when it re-normalised.

        Refits when the index holds ``normalizer_refit_growth`` times the catalog the
        normaliser was fitted on, then re-normalises every indexed vector. A reducer that
        dies re-normalising leaves the index's marker on the old normaliser, so the next
        one starts over: upserts replace by id, so doing it twice changes nothing.
        """
        normalizer = self.normalizer()
        if self._indexed_with != normalizer.version:
            self._indexed_with = self.indexed_with()
        count = self.index.count()
        if needs_refit(normalizer, count, self.settings.normalizer_refit_growth):
            log.info("the index holds %d records, %.1fx the %d the normaliser was fitted "
                     "on: refitting", count, count / max(normalizer.catalog_size, 1),
                     normalizer.catalog_size)
            normalizer = self._fit()
        if self._indexed_with == normalizer.version:
            return False
        if count == 0:  # nothing normalised by anything else
            self._mark_indexed(normalizer)
            return False
        n = self._upsert_all(normalizer)
        log.info("re-normalised %d indexed records with normaliser %s", n, normalizer.version)
        self._mark_indexed(normalizer)
        return True

    def _read(self, keys: Iterable[str]) -> Iterator[FeatureRecord]:
        """Decode stored records of this version, concurrently read; skips vanished ones
        and logs (with its key) and skips each one that cannot be decoded: one bad record
        must not stop a fit, a reindex or a query."""
        for key, data in read_many(self.store, keys):
            if data is None:
                continue
            try:
                yield decode_stored(key, data, self.version)
            except (CorruptRecord, IncompatibleRecord) as exc:
                log.error("%s; skipped, not indexed (%s)", exc.message, exc.code)

    def _iter_records(self) -> Iterator[FeatureRecord]:
        yield from self._read(self.store.iter_keys(f"features/{self.version}/"))

    # --- batches ------------------------------------------------------------------------
    def items_for(self, records: list[FeatureRecord],
                  normalizer: Normalizer | None = None) -> list[IndexItem]:
        normalizer = normalizer or self.normalizer()
        values = normalizer.apply(np.stack([r.vector_array() for r in records]))
        items = []
        for record, vector in zip(records, values, strict=True):
            metadata = {k: record.descriptors[k] for k in DESCRIPTORS
                        if k in record.descriptors}
            metadata.update({
                "recording_id": record.recording_id,
                "normalizer": normalizer.version,
                **{k: record.provenance[k] for k in ("artist", "title", "isrc", "run_id")
                   if record.provenance.get(k)},
            })
            items.append(IndexItem(vector_id(record.recording_id), vector, metadata))
        return items

    def reduce_once(self, batch_size: int | None = None) -> int:
        """Upsert up to one batch of ready records; returns how many entries were consumed."""
        size = min(batch_size or self.settings.reduce_batch_size, 5000)
        token = secrets.token_hex(16)
        if not self.runs.acquire_reducer_lock(token, self.lock_ttl_s):
            return 0  # another reducer is working; its batch will be consumed by it
        stop_renewing = threading.Event()
        threading.Thread(target=self._renew_lock, args=(token, stop_renewing), daemon=True,
                         name="reducer-lock").start()
        try:
            keys = self.runs.peek_ready(size)
            if not keys:
                return 0
            records: dict[str, FeatureRecord] = {}
            record_keys: dict[str, str] = {}  # recording id → the key it was read from
            for key in self._to_upsert(keys):
                try:
                    record = decode_stored(key, self.store.get(key), self.version)
                except FileNotFoundError:
                    # Parked, not dropped: a record queued as written cannot just vanish
                    # (a store swapped or restored under the reducer); `pv:ready:dead` keeps
                    # its key for `previewvec reindex` or an operator to look at.
                    log.error("ready record %s is missing from the store; parked in %s",
                              key, DEAD_LETTER_QUEUE)
                    self.runs.park(key)
                    continue
                except (CorruptRecord, IncompatibleRecord) as exc:
                    # Parked, not dropped: one bad record must not stall the queue, and
                    # `pv:ready:dead` keeps it visible (e.g. another feature version
                    # written during a rolling deploy; `previewvec reindex` recovers it).
                    log.error("%s; cannot be indexed (%s), parked in %s", exc.message,
                              exc.code, DEAD_LETTER_QUEUE)
                    self.runs.park(key)
                    continue
                records[record.recording_id] = record
                record_keys[record.recording_id] = key
            if records:
                # Before the upsert: a refit re-normalises what the index holds, and this
                # batch is then normalised by the normaliser the index is wholly built with.
                self.maintain_normalizer()
                for record, exc in self._upsert_indexable(list(records.values())):
                    # Parked like a corrupt record: a record the index refuses (a
                    # descriptor of the wrong type, metadata over the index's limit)
                    # would otherwise fail its whole batch on every pass, for good.
                    key = record_keys[record.recording_id]
                    log.error("stored record %s: %s; cannot be indexed (%s), parked in %s",
                              key, exc.message, exc.code, DEAD_LETTER_QUEUE)
                    self.runs.park(key)
            if not self.runs.trim_ready_if_owner(token, keys):
                log.warning("reducer lock expired during a batch; its entries stay queued "
                            "(upserting them again is harmless)")
                return 0
            return len(keys)
        finally:
            stop_renewing.set()
            self.runs.release_reducer_lock(token)

    def _to_upsert(self, entries: list[str]) -> list[str]:
        """The record keys of a batch of ready entries to read and upsert, in queue order.

        Every plain entry (a record just written) is upserted. An if-absent entry (a
        skipped job's record) is upserted only when the index does not hold its vector,
        asked in one :meth:`~reducer.index.VectorIndex.contains` call per batch: that
        covers a worker that died between storing a record and pushing its key, without
        a list of indexed ids in Redis. A key queued twice is read once.
        """
        always: dict[str, None] = {}
        if_absent: dict[str, None] = {}
        for entry in entries:
            key, only_if_absent = parse_ready_entry(entry)
            (if_absent if only_if_absent else always)[key] = None
        maybe: dict[str, str] = {}  # record key → vector id
        for key in if_absent:
            if key in always:
                continue
            try:
                maybe[key] = vector_id(recording_id_of_key(key))
            except ValueError:
                log.error("ready entry %r is not a record key; parked in %s", key,
                          DEAD_LETTER_QUEUE)
                self.runs.park(key)
        present = self.index.contains(list(maybe.values())) if maybe else set()
        wanted = {key for key, vid in maybe.items() if vid not in present}
        return [key for key in dict.fromkeys(parse_ready_entry(e)[0] for e in entries)
                if key in always or key in wanted]

    def housekeeping(self) -> Housekeeping:
        """Close finished runs, prune expired ones (see :meth:`Runs.close_finished`)."""
        if not self._legacy_sets_dropped:
            dropped = self.runs.drop_legacy_indexed_sets()
            if dropped:
                log.info("deleted %d pv:indexed:* set(s) of an earlier version", dropped)
            self._legacy_sets_dropped = True
        report = self.runs.close_finished(ttl_s=self.settings.run_ttl_s)
        if report.closed or report.abandoned or report.pruned:
            log.info("runs: closed %d, abandoned %d (expiring), pruned %d expired; %d open",
                     len(report.closed), len(report.abandoned), len(report.pruned),
                     report.open)
        return report

    def _renew_lock(self, token: str, stop: threading.Event) -> None:
        """Keep our lock alive until ``stop``; give up once it is no longer ours."""
        while not stop.wait(self.lock_ttl_s / 3):
            try:
                if not self.runs.renew_reducer_lock(token, self.lock_ttl_s):
                    return
            except RedisError:
                log.warning("could not renew the reducer lock", exc_info=True)

    def drain(self, batch_size: int | None = None) -> int:
        """Reduce until the ready queue is empty; returns entries consumed."""
        total = 0
        while True:
            n = self.reduce_once(batch_size)
            if n == 0:
                if self.runs.ready_depth() == 0:
                    self.housekeeping()
                    return total
                time.sleep(0.2)  # another reducer holds the lock
                continue
            total += n

    def follow(self, batch_size: int | None = None, idle_sleep_s: float = 1.0,
               stop_after_s: float | None = None, heartbeat: Heartbeat | None = None) -> None:
        """Reduce forever (or until ``stop_after_s``), sleeping while the queue is empty.

        An index, store or Redis outage that outlasts the clients' own retries, or Redis
        refusing commands (:func:`contract.state.redis_refusal`: at its maxmemory,
        MISCONF), does not end the loop: the batch stays queued (nothing was trimmed) and
        is tried again after a full-jitter pause (:mod:`contract.retry`) whose ceiling
        doubles from 1 s up to ``OUTAGE_BACKOFF_CAP_S`` while the failures last.
        ``heartbeat`` is touched on every pass, outages included (:mod:`reducer.liveness`).
        """
        started = time.monotonic()
        failures = 0
        housekept_at: float | None = None
        while stop_after_s is None or time.monotonic() - started < stop_after_s:
            if heartbeat is not None:
                heartbeat.beat()
            try:
                if housekept_at is None or time.monotonic() - housekept_at >= \
                        HOUSEKEEPING_EVERY_S:
                    housekept_at = time.monotonic()
                    self.housekeeping()
                consumed = self.reduce_once(batch_size)
            except (IndexUnavailable, StoreUnavailable, StoreFolderMissing, RedisError) as exc:
                # Redis away, or refusing commands (at its maxmemory, MISCONF, a replica
                # after a failover): both pass; any other error reply is a bug. A store
                # folder that is not there (a volume not mounted yet, a typo) is waited for
                # like an outage and said in every warning: nothing is trimmed.
                if isinstance(exc, RedisError) and not redis_outage(exc):
                    raise
                failures += 1
                pause_s = OUTAGE_BACKOFF.delay(failures)
                log.warning("reduce failed (%s: %s); batch stays queued, retry in %.1f s",
                            type(exc).__name__, exc, pause_s)
                time.sleep(pause_s)
                continue
            failures = 0
            if consumed == 0:
                time.sleep(idle_sleep_s)

    def reindex(self, batch_size: int | None = None, *, refit: bool = False) -> int:
        """Rebuild the index from every stored record of the current feature version."""
        normalizer = self.normalizer(refit=refit)
        total = self._upsert_all(normalizer, batch_size)
        self._mark_indexed(normalizer)
        return total

    def _upsert_all(self, normalizer: Normalizer, batch_size: int | None = None) -> int:
        """Upsert every stored record of this version, normalised by ``normalizer``."""
        size = min(batch_size or self.settings.reduce_batch_size, 5000)
        batch: list[FeatureRecord] = []
        total = 0
        for record in self._iter_records():
            batch.append(record)
            if len(batch) >= size:
                total += self._upsert(batch, normalizer)
                batch = []
        if batch:
            total += self._upsert(batch, normalizer)
        return total

    def _upsert(self, records: list[FeatureRecord], normalizer: Normalizer) -> int:
        refused = self._upsert_indexable(records, normalizer)
        for record, exc in refused:
            log.error("stored record %s: %s; skipped, not indexed (%s)", record.key,
                      exc.message, exc.code)
        return len(records) - len(refused)

    def _upsert_indexable(self, records: list[FeatureRecord],
                          normalizer: Normalizer | None = None,
                          ) -> list[tuple[FeatureRecord, InvalidIndexItem]]:
        """Upsert ``records``, but those whose items the index refuses (:class:`InvalidIndexItem`:
        a record decodes with a descriptor of the wrong type, or metadata over the index's
        limit), which are returned with the reason. The index checks every item before it
        writes anything, so the batch is checked item by item only when it was refused."""
        items = self.items_for(records, normalizer)
        try:
            self.index.upsert(items)
            return []
        except InvalidIndexItem:
            pass
        refused: list[tuple[FeatureRecord, InvalidIndexItem]] = []
        accepted: list[IndexItem] = []
        for record, item in zip(records, items, strict=True):
            try:
                check_items([item], VECTOR_DIM)
            except InvalidIndexItem as exc:
                refused.append((record, exc))
                continue
            accepted.append(item)
        if accepted:
            self.index.upsert(accepted)
        return refused

    # --- queries ------------------------------------------------------------------------
    def similar(self, recording_id: str, k: int = 10, *, filter: dict | None = None):
        """Neighbours of a stored recording (itself excluded), best first."""
        check_k(k)  # before asking the index for k + 1: k = 0 would ask for one
        # An index with a top-k cap (Vectorize: 100) is asked for at most that: at the cap
        # the answer holds k - 1 neighbours when the recording itself is among them.
        cap = getattr(self.index, "max_k", None)
        if cap is not None:
            check_k(k, cap)
        key = record_key(self.version, recording_id)
        record = decode_stored(key, self.store.get(key), self.version)
        own = vector_id(recording_id)
        ask = k + 1 if cap is None else min(k + 1, cap)
        return [m for m in self.similar_to_vector(record.vector_array(), ask,
                                                  filter=filter) if m.id != own][:k]

    def similar_to_vector(self, raw: np.ndarray, k: int = 10, *,
                          filter: dict | None = None) -> list[Match]:
        """Neighbours of a raw (unnormalised) vector, normalised as the index's are."""
        check_k(k)
        raw = check_query_vector(raw, VECTOR_DIM)  # the caller's fault, typed as such
        normalize_filter(filter)  # a bad filter is refused, also before anything is indexed
        normalizer = self._query_normalizer()
        if normalizer is None:
            return []  # nothing reduced yet: no normaliser and no vectors
        return self.index.query(normalizer.apply(raw), k, filter=filter)

    def _query_normalizer(self) -> Normalizer | None:
        """The normaliser a query applies: the stored one. A query only reads (an API
        with read-only store credentials, a reducer not yet run), so it never fits one;
        None when none is stored and the index is empty."""
        try:
            return self.normalizer(fit_missing=False)
        except FileNotFoundError:
            if self.index.count() == 0:
                return None
            raise VectorIndexError(
                f"the vector index holds vectors but the store has no normaliser for "
                f"version {self.version} ({normalizer_key(self.version)}) to query them "
                "with: run `previewvec reindex --refit`") from None
