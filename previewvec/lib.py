"""previewvec's Python API: the catalog (store + index) and extraction, for notebooks and
programs. Re-exported from the package root: ``import previewvec``.

    catalog = previewvec.open()                      # the settings' store and index
    matrix, ids = catalog.matrix()                   # (n, 530) float32
    features = previewvec.extract("song.m4a")        # or the file's bytes
    catalog.similar_to_audio("song.m4a", k=5)
    frame = catalog.fma_frame()                      # FMA's features.csv layout (pandas)

Everything here goes through the same code as the command line: the store backends, the
record decoder, the export's Arrow conversion, the reducer's normaliser and index.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import numpy as np

from contract.errors import (
    ConfigError,
    InputUnreadable,
    InvalidQuery,
    NotFound,
    NothingStored,
)
from contract.layout import FMA_DIM, PITCH_CLASSES, VECTOR_DIM, feature_names, fma_names
from contract.records import FeatureRecord, decode_stored, record_key
from contract.settings import Settings
from contract.store import FeatureStore, open_store
from contract.versions import (
    VersionMismatch,
    check_claim,
    current_version,
    derived_version,
    is_version_name,
)
from previewvec.faults import MAX_K

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from previewvec.export import ReadCounts
    from reducer.reduce import Reducer

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
# The names of the three header rows of FMA's features.csv (FMA's ``utils.load``).
FMA_CSV_HEADER = ("feature", "statistics", "number")
MODES = ("major", "minor")


@dataclass(frozen=True)
class Extracted:
    """One clip's features: the raw vector (``feature_names()`` order), descriptors."""

    vector: np.ndarray  # (530,) float32
    descriptors: dict[str, Any]
    feature_version: str


@dataclass(frozen=True)
class Neighbour:
    """A similar recording: cosine ``score`` (1 = same direction) and its descriptors."""

    recording_id: str
    score: float
    descriptors: dict[str, Any]


def warm_jit_cache(settings: Settings) -> None:
    """Warm numba's compile cache, safely shared with concurrent processes; a cold one is
    compiled once under its lock (before librosa, and so numba, is imported).

    Raises :class:`ConfigError` when ``PREVIEWVEC_CACHE_DIR`` cannot hold it (a file in
    the way, no permission, a full disk)."""
    from workers import jitcache

    try:
        if not jitcache.is_warm(settings):
            jitcache.warm(settings)
    except OSError as exc:
        raise ConfigError(f"cannot use the compile cache under {settings.cache_dir} "
                          f"(PREVIEWVEC_CACHE_DIR): {exc.strerror or exc}") from None


def extract(source: AudioSource, settings: Settings | None = None) -> Extracted:
    """Decode and extract one clip (a path, its encoded bytes, or a file opened ``rb``),
    as workers do.

    Raises the typed errors of :mod:`contract.errors` (``undecodable``, ``too_short``, …);
    a path that cannot be read (missing, a folder, no permission) is
    :class:`InputUnreadable`.
    """
    from workers.analysis import analyze

    settings = settings or Settings.from_env()
    if not isinstance(source, str | os.PathLike | bytes | bytearray | memoryview):
        source = _file_object_source(source, settings.max_input_bytes)
    warm_jit_cache(settings)  # ConfigError when PREVIEWVEC_CACHE_DIR cannot hold it
    try:
        result = analyze(source, settings)
    except OSError as exc:
        if not isinstance(source, str | os.PathLike):
            raise
        # Reading the path (the decoder types its own faults), as `previewvec extract`.
        raise InputUnreadable(f"cannot read {os.fspath(source)!r}: "
                              f"{exc.strerror or exc}") from None
    return Extracted(vector=np.asarray(result.features.vector, dtype=np.float32),
                     descriptors=dict(result.features.descriptors),
                     feature_version=derived_version(settings))


def _file_object_source(source: Any, max_input_bytes: int) -> bytes | BinaryIO:
    """A file object opened ``rb`` as the decoder takes it: one on a regular file as it is
    (read from its start as it is decoded, whatever its size, as a path), any other
    (a pipe, a socket, an in-memory buffer) as its bytes, one byte past the limit at most,
    so that the decoder answers ``too_large`` without the whole of it being read."""
    from workers.audio import is_regular_file

    read = getattr(source, "read", None)
    if read is None:
        raise TypeError("source must be a path, bytes or a file opened 'rb', "
                        f"not {type(source).__name__}")
    if isinstance(source, io.TextIOBase):  # its read() would decode audio as text first
        raise TypeError("source is a file opened as text: open it 'rb'")
    if is_regular_file(source):
        return cast(BinaryIO, source)
    data = read(max_input_bytes + 1)
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"source is a file opened as text: open it 'rb' "
                        f"(read() gave {type(data).__name__}, not bytes)")
    return bytes(data)


class Catalog:
    """The stored records of one feature version, and the index built from them."""

    def __init__(self, settings: Settings, *, version: str | None = None) -> None:
        self.settings = settings
        if version is not None and not is_version_name(version):
            raise InvalidQuery(f"not a feature version: {version!r} (e.g. pv8, or "
                               "pv8-<10 hex> for other settings)")
        self.version = version or current_version(settings)
        # A reader: a mistyped folder is an error, not an empty catalog.
        self.store: FeatureStore = open_store(settings.store, settings, create=False)

    def __repr__(self) -> str:
        return f"Catalog(store={self.settings.store!r}, version={self.version!r})"

    @property
    def names(self) -> tuple[str, ...]:
        """The vector's dimension names, in order."""
        return feature_names()

    # --- records --------------------------------------------------------------------
    def records(self, *, run_id: str | None = None,
                counts: ReadCounts | None = None) -> Iterator[FeatureRecord]:
        """Every stored record (of ``run_id``'s writing), streamed in key order.

        A record that cannot be read is skipped with a warning naming its key (logger
        ``previewvec.export``) and counted in ``counts.skipped`` when ``counts`` (a
        :class:`previewvec.export.ReadCounts`) is given; so are :meth:`matrix`,
        :meth:`batches`, :meth:`table` and :meth:`fma_frame`, which take ``counts`` too."""
        from previewvec.export import iter_records

        yield from iter_records(self.store, self.version, run_id=run_id, counts=counts)

    def record(self, recording_id: str) -> FeatureRecord:
        """One stored record; :class:`~contract.errors.NotFound` if there is none."""
        try:
            key = record_key(self.version, recording_id)
            return decode_stored(key, self.store.get(key), self.version)
        except (FileNotFoundError, ValueError):
            raise NotFound(f"no stored record for {recording_id!r} of feature version "
                           f"{self.version}") from None

    def matrix(self, *, run_id: str | None = None,
               counts: ReadCounts | None = None) -> tuple[np.ndarray, list[str]]:
        """``(vectors, recording_ids)``: an ``(n, 530)`` float32 matrix, row i of
        ``recording_ids[i]``. Holds the whole catalog, built in one buffer (peak memory
        ≈ 1.6× the matrix at 100 000 records, docs/benchmarks.md); for catalogs larger
        than memory use :meth:`batches` or ``previewvec export``."""
        ids: list[str] = []

        def rows() -> Iterator[np.ndarray]:
            for record in self.records(run_id=run_id, counts=counts):
                ids.append(record.recording_id)
                yield record.vector_array()

        # fromiter grows one buffer as rows arrive; stacking a list of rows held every
        # row twice at the end (the list and the stacked copy).
        matrix = np.fromiter(rows(), dtype=np.dtype((np.float32, (VECTOR_DIM,))))
        return matrix, ids

    def batches(self, *, run_id: str | None = None,
                counts: ReadCounts | None = None) -> Iterator[pa.RecordBatch]:
        """The catalog as Arrow record batches (the export's columns), streamed."""
        from previewvec.export import iter_batches

        yield from iter_batches(self.records(run_id=run_id, counts=counts), self.version)

    def table(self, *, run_id: str | None = None,
              counts: ReadCounts | None = None) -> pa.Table:
        """The catalog as one Arrow table: the columns of ``previewvec export``."""
        import pyarrow as pa

        from previewvec.export import record_schema

        return pa.Table.from_batches(list(self.batches(run_id=run_id, counts=counts)),
                                     schema=record_schema(self.version))

    def fma_frame(self, *, run_id: str | None = None,
                  counts: ReadCounts | None = None) -> pd.DataFrame:
        """The FMA block as a pandas DataFrame laid out like FMA's ``features.csv`` once
        loaded (``pd.read_csv(path, index_col=0, header=[0, 1, 2])``): one row per
        recording (index ``recording_id``), the 518 columns as the MultiIndex
        ``(feature, statistics, number)`` in FMA's order, float32. A model trained on
        FMA's published features can take it as it is, or ``frame[model_columns]``.
        Holds the whole catalog, like :meth:`matrix`. Needs pandas (the ``analysis``
        extra)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("Catalog.fma_frame needs pandas: "
                              "pip install 'previewvec[analysis]'") from exc

        matrix, ids = self.matrix(run_id=run_id, counts=counts)
        columns = pd.MultiIndex.from_tuples([tuple(n.split(".")) for n in fma_names()],
                                            names=FMA_CSV_HEADER)
        return pd.DataFrame(matrix[:, :FMA_DIM], index=pd.Index(ids, name="recording_id"),
                            columns=columns)

    # --- similarity -----------------------------------------------------------------
    @cached_property
    def _reducer(self) -> Reducer:
        from reducer.reduce import Reducer

        # The reducer owns the normaliser and the index; querying needs no Redis.
        return Reducer.build(dataclasses.replace(self.settings,
                                                 feature_version=self.version),
                             create_store=False, create_index=False)

    def similar(self, recording_id: str, k: int = 10, **filters: Any) -> list[Neighbour]:
        """The ``k`` nearest stored recordings to a stored one (itself excluded).
        ``filters``: ``tempo_min``, ``tempo_max``, ``key``, ``mode``."""
        from reducer.index.base import check_k

        k = check_k(_plain_int(k), MAX_K)  # InvalidQuery, before anything is read
        where = _filter(filters)
        self.record(recording_id)  # NotFound, typed, before the index is asked
        matches = self._not_empty(self._reducer.similar(recording_id, k, filter=where))
        return [self._neighbour(m) for m in matches]

    def similar_to_vector(self, vector: np.ndarray | Extracted, k: int = 10,
                          **filters: Any) -> list[Neighbour]:
        """Nearest recordings to a raw vector (as :meth:`matrix` gives it, or what
        :func:`extract` returned: then its feature version must be the catalog's); it is
        normalised as the index's vectors are. A vector that is not ``VECTOR_DIM`` finite
        numbers, of another version, or ``k`` below 1: :class:`InvalidQuery`."""
        from reducer.index.base import check_k, check_query_vector

        k = check_k(_plain_int(k), MAX_K)  # before the index and the normaliser open
        where = _filter(filters)
        if isinstance(vector, Extracted):
            if vector.feature_version != self.version:
                raise InvalidQuery(
                    f"the vector was computed as {vector.feature_version}, the catalog holds "
                    f"{self.version}: not comparable (extract with the settings that wrote "
                    "the catalog)")
            vector = vector.vector
        raw = check_query_vector(vector, VECTOR_DIM)
        matches = self._not_empty(self._reducer.similar_to_vector(raw, k, filter=where))
        return [self._neighbour(m) for m in matches]

    def similar_to_audio(self, source: AudioSource, k: int = 10,
                         **filters: Any) -> list[Neighbour]:
        """Nearest recordings to a clip that need not be stored: extracted with these
        settings, which must compute the index's version."""
        settings = dataclasses.replace(self.settings, feature_version=self.version)
        try:
            check_claim(settings)  # a clip analysed otherwise is not comparable
        except VersionMismatch:
            raise VersionMismatch(
                f"these settings compute {derived_version(self.settings)}, the catalog "
                f"holds {self.version}: a clip analysed otherwise is not comparable (use "
                "the settings that wrote the catalog)") from None
        return self.similar_to_vector(extract(source, settings), k, **filters)

    def _not_empty(self, matches: list[Any]) -> list[Any]:
        """``matches``, unless there are none because nothing was indexed yet: then
        :class:`NothingStored` (as ``previewvec similar``), not [] as if nothing were
        alike."""
        if not matches and self._reducer.index.count() == 0:
            raise NothingStored("the vector index holds no vectors: run `previewvec "
                                "reduce` (or `previewvec reindex`) first")
        return matches

    @staticmethod
    def _neighbour(match: Any) -> Neighbour:
        from reducer.reduce import match_descriptors

        return Neighbour(match.metadata.get("recording_id", match.id), float(match.score),
                         match_descriptors(match))


FILTERS = ("tempo_min", "tempo_max", "key", "mode")


def _plain_int(k: Any) -> Any:
    """``k`` as a Python int when it is a numpy integer (``len``-like values read off an
    array); anything else as given, for :func:`check_k` to judge."""
    return int(k) if isinstance(k, np.integer) else k


def _filter(filters: dict[str, Any]) -> dict[str, Any] | None:
    """The index filter of ``similar*``'s keyword filters.

    :class:`InvalidQuery` for an unknown filter name, a tempo bound that is not a finite
    number, and a key, mode or tempo range no record can have (it would match nothing
    and answer [] silently). Numpy numbers are taken as the Python numbers they hold."""
    from reducer.reduce import similar_filter

    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise InvalidQuery(f"unknown filter {', '.join(unknown)}: similar* filter by "
                           f"{', '.join(FILTERS)}")
    filters = dict(filters)
    for bound in ("tempo_min", "tempo_max"):
        value = filters.get(bound)
        if value is None:
            continue
        try:
            number = float(value)  # the index's filter takes Python numbers only
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if (isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number)
                or not math.isfinite(number) or number < 0):
            raise InvalidQuery(f"{bound} must be a finite number of BPM (0 or more), not "
                               f"{value!r}")
        filters[bound] = number
    low, high = filters.get("tempo_min"), filters.get("tempo_max")
    if low is not None and high is not None and low > high:
        raise InvalidQuery(f"tempo_min {low:g} is above tempo_max {high:g}: no recording "
                           "can match")
    key, mode = filters.get("key"), filters.get("mode")
    # isinstance first: `in` compares, and pandas' NA refuses to be a truth value.
    if key is not None and not (isinstance(key, str) and key in PITCH_CLASSES):
        raise InvalidQuery(f"key must be one of {', '.join(PITCH_CLASSES)}, not {key!r}")
    if mode is not None and not (isinstance(mode, str) and mode in MODES):
        raise InvalidQuery(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return similar_filter(**filters)


def open(store: str | os.PathLike[str] | None = None, *,  # the API: previewvec.open()
         index: str | os.PathLike[str] | None = None, version: str | None = None,
         settings: Settings | None = None) -> Catalog:
    """The catalog at ``store`` with its ``index`` (defaults: ``PREVIEWVEC_STORE`` and
    ``PREVIEWVEC_INDEX``, as the command line): URLs or folders (``pathlib.Path`` too);
    ``version``: a feature version other than the one the settings compute."""
    settings = settings or Settings.from_env()
    # Settings hold text, as the environment gives it: the backends parse URLs from it.
    changes = {k: os.fspath(v) for k, v in (("store", store), ("index", index))
               if v is not None}
    return Catalog(dataclasses.replace(settings, **changes), version=version)
