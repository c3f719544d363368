"""previewvec/lib.py, the Python API: the README's example runs verbatim on a real store
and index built from audio the test encodes, and the API's parts agree with each other."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import previewvec
from contract.errors import InputUnreadable, InvalidQuery, NotFound, TooLarge, Undecodable
from contract.records import FeatureRecord, encode_record, make_provenance
from contract.settings import Settings
from reducer.reduce import Reducer
from testkit.encode import encode_audio
from testkit.records import synthetic_record
from testkit.songs import generate_song, render_synth

REPO = Path(__file__).resolve().parents[3]
SR = 22_050
SONGS = [(0, "major", 92.0, "m4a"), (9, "minor", 128.0, "mp3"), (4, "minor", 104.0, "ogg"),
         (7, "major", 140.0, "wav")]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)[:1]
    return code


def song_bytes(i: int, tonic: int, mode: str, tempo: float, fmt: str) -> bytes:
    score = generate_song(500 + i, tonic=tonic, mode=mode, tempo_bpm=tempo, drums=True,
                          duration_s=8.0)
    return encode_audio(render_synth(score, sr=SR), SR, fmt)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with song.m4a, a store of four extracted songs and their index."""
    root = tmp_path_factory.mktemp("lib")
    settings = Settings(store=str(root / "store"), index=str(root / "index"),
                        cache_dir=Settings.from_env().cache_dir)
    catalog = previewvec.open(settings=settings)
    for i, (tonic, mode, tempo, fmt) in enumerate(SONGS):
        data = song_bytes(i, tonic, mode, tempo, fmt)
        if i == 0:
            (root / "song.m4a").write_bytes(data)
        features = previewvec.extract(data, settings)
        record = FeatureRecord(
            recording_id=f"song-{i}", vector=features.vector,
            descriptors=features.descriptors,
            provenance=make_provenance(preview_url=f"https://p.scdn.co/{i}",
                                       audio_sha256="00" * 32, source="test",
                                       run_id="run-lib", title=f"Song {i}"),
            feature_version=features.feature_version)
        catalog.store.put(record.key, encode_record(record))
    Reducer.build(settings).reindex()
    yield root


def test_the_readme_example_runs_verbatim(catalog_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(catalog_dir)
    monkeypatch.setenv("PREVIEWVEC_STORE", str(catalog_dir / "store"))
    monkeypatch.setenv("PREVIEWVEC_INDEX", str(catalog_dir / "index"))
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "(4, 530) 4" in out and "Song 2" in out
    by_audio = namespace["by_audio"]  # filtered on mode="minor"
    minor = {r.recording_id for r in namespace["catalog"].records()
             if r.descriptors["mode"] == "minor"}
    assert minor and {n.recording_id for n in by_audio} == minor


def test_matrix_table_and_records_agree(catalog_dir: Path) -> None:
    catalog = previewvec.open(str(catalog_dir / "store"), index=str(catalog_dir / "index"))
    matrix, ids = catalog.matrix()
    table = catalog.table()
    assert matrix.dtype == np.float32 and matrix.shape == (4, 530)
    assert table.column("recording_id").to_pylist() == ids
    np.testing.assert_array_equal(
        np.stack(table.column("vector").to_numpy(zero_copy_only=False)), matrix)
    assert catalog.record(ids[2]).recording_id == ids[2]
    with pytest.raises(NotFound):
        catalog.record("song-404")
    assert catalog.matrix(run_id="run-none")[0].shape == (0, 530)


def test_fma_frame_is_laid_out_as_fmas_features_csv(catalog_dir: Path, tmp_path: Path) -> None:
    """The columns FMA's utils.load gives its features.csv (3 header rows, sorted), the
    values of the matrix's FMA block; a CSV written in FMA's shape reads back the same."""
    import pandas as pd

    from contract.layout import FMA_FEATURE_SIZES, FMA_STATISTICS

    catalog = previewvec.open(str(catalog_dir / "store"), index=str(catalog_dir / "index"))
    frame = catalog.fma_frame()
    matrix, ids = catalog.matrix()
    # FMA's features.py columns(): every (feature, moment, number), as a sorted MultiIndex
    expected = pd.MultiIndex.from_tuples(
        [(name, moment, f"{i + 1:02d}") for name, size in FMA_FEATURE_SIZES.items()
         for moment in FMA_STATISTICS for i in range(size)],
        names=("feature", "statistics", "number")).sort_values()
    assert frame.columns.equals(expected) and list(frame.columns.names) == list(expected.names)
    assert list(frame.index) == ids and frame.index.name == "recording_id"
    np.testing.assert_array_equal(frame.to_numpy(), matrix[:, :518])
    assert frame.loc["song-1", ("mfcc", "mean", "01")] == matrix[ids.index("song-1"),
                                                                 catalog.names.index("mfcc.mean.01")]
    path = tmp_path / "features.csv"
    frame.to_csv(path)
    loaded = pd.read_csv(path, index_col=0, header=[0, 1, 2])  # FMA's utils.load
    assert loaded.columns.equals(frame.columns)
    np.testing.assert_allclose(loaded.to_numpy(), frame.to_numpy(), rtol=1e-6)
    assert catalog.fma_frame(run_id="run-none").shape == (0, 518)


def test_similar_by_audio_finds_the_stored_clip_first(catalog_dir: Path) -> None:
    catalog = previewvec.open(str(catalog_dir / "store"), index=str(catalog_dir / "index"))
    data = (catalog_dir / "song.m4a").read_bytes()
    by_audio = catalog.similar_to_audio(data, k=4)
    assert by_audio[0].recording_id == "song-0" and by_audio[0].score > 0.999
    by_path = catalog.similar_to_audio(os.fspath(catalog_dir / "song.m4a"), k=1)
    assert by_path[0].recording_id == "song-0"
    by_id = catalog.similar("song-0", k=3)
    assert "song-0" not in [n.recording_id for n in by_id] and len(by_id) == 3
    extracted = previewvec.extract(data)
    assert catalog.similar_to_vector(extracted.vector, k=1)[0].recording_id == "song-0"
    # what extract returned carries its version: one of other settings is refused (from
    # the data-scientist review: compared without a word)
    assert catalog.similar_to_vector(extracted, k=1)[0].recording_id == "song-0"
    other = dataclasses.replace(extracted, feature_version="pv8-0123456789")
    with pytest.raises(InvalidQuery, match="pv8-0123456789"):
        catalog.similar_to_vector(other, k=1)


def test_the_cli_similar_audio_answers_like_the_api(catalog_dir: Path) -> None:
    """`previewvec similar --audio FILE`: extracted, normalised, queried, in a real process;
    and one line with exit 7 for a file that is no audio."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "PREVIEWVEC_STORE": str(catalog_dir / "store"),
           "PREVIEWVEC_INDEX": str(catalog_dir / "index")}
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "similar", "--audio",
                             str(catalog_dir / "song.m4a"), "-k", "2"], env=env,
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["recording_id"] == "song-0" and len(lines) == 2
    (catalog_dir / "junk.m4a").write_bytes(b"not audio at all" * 100)
    bad = subprocess.run([sys.executable, "-m", "previewvec.cli", "similar", "--audio",
                          str(catalog_dir / "junk.m4a")], env=env, capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    assert bad.returncode == 7 and bad.stderr.count("\n") == 1, bad.stderr
    assert "undecodable" in bad.stderr
    both = subprocess.run([sys.executable, "-m", "previewvec.cli", "similar"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert both.returncode == 2 and "RECORDING_ID or --audio" in both.stderr


def test_extract_takes_an_open_file_as_its_bytes(catalog_dir: Path) -> None:
    """Given the clip as a path, a str, bytes, a bytearray, a memoryview and a file opened
    ``rb``, expect one vector; a file opened as text is a TypeError saying so."""
    path = catalog_dir / "song.m4a"
    data = path.read_bytes()
    expected = previewvec.extract(path).vector
    with path.open("rb") as handle:
        sources = [os.fspath(path), data, bytearray(data), memoryview(data), handle]
        for source in sources:
            assert np.array_equal(previewvec.extract(source).vector, expected)
    with path.open("r", encoding="latin-1") as text, pytest.raises(TypeError, match="'rb'"):
        previewvec.extract(text)  # type: ignore[arg-type]


def test_extract_reads_a_file_as_it_decodes_but_caps_bytes(catalog_dir: Path) -> None:
    """Given PREVIEWVEC_MAX_INPUT_BYTES below the clip's size, expect its path and a file
    opened ``rb`` on it (even one already read into) to give the same vector as before,
    as a whole-track FLAC would; its bytes, or an in-memory buffer of them, are
    ``too_large``: those are held whole."""
    path = catalog_dir / "song.m4a"
    data = path.read_bytes()
    expected = previewvec.extract(path).vector
    small = dataclasses.replace(Settings.from_env(), max_input_bytes=len(data) // 2)
    assert np.array_equal(previewvec.extract(path, small).vector, expected)
    with path.open("rb") as handle:
        handle.read(1000)  # decoded from its start all the same
        assert np.array_equal(previewvec.extract(handle, small).vector, expected)
    for source in (data, io.BytesIO(data)):
        with pytest.raises(TooLarge):
            previewvec.extract(source, small)


@pytest.mark.parametrize("name", ["missing.m4a", "."])
def test_extract_of_a_path_it_cannot_read_is_input_unreadable(tmp_path: Path,
                                                               name: str) -> None:
    """Given a missing file or a folder, expect :class:`InputUnreadable` naming it (an
    OSError was raised as it came), for ``extract`` and ``similar_to_audio`` alike."""
    path = tmp_path / name
    with pytest.raises(InputUnreadable, match=re.escape(str(path))):
        previewvec.extract(path)
    catalog = previewvec.open(str(tmp_path / "store"), index=str(tmp_path / "index"))
    with pytest.raises(InputUnreadable):
        catalog.similar_to_audio(str(path))
    (tmp_path / "junk.m4a").write_bytes(b"not audio at all" * 100)
    with open(tmp_path / "junk.m4a", "rb") as handle, pytest.raises(Undecodable):
        previewvec.extract(handle)


@pytest.fixture(scope="module")
def synthetic_catalog(tmp_path_factory: pytest.TempPathFactory) -> previewvec.Catalog:
    """A catalog of 20 synthetic records, indexed."""
    root = tmp_path_factory.mktemp("synthetic")
    settings = Settings(store=str(root / "store"), index=str(root / "index"))
    catalog = previewvec.open(settings=settings)
    for i in range(20):
        record = synthetic_record(i)
        catalog.store.put(record.key, encode_record(record))
    Reducer.build(settings).reindex()
    return catalog


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_is_an_invalid_query(synthetic_catalog: previewvec.Catalog,
                                         k: int) -> None:
    """Given k < 1, expect the typed input error (a ValueError too), never [] or a plain
    ValueError from the index, whether by a stored recording or by a vector."""
    vector = synthetic_record(1).vector_array()
    with pytest.raises(InvalidQuery, match="k must be a positive integer") as raised:
        synthetic_catalog.similar("rec-0000001", k=k)
    assert raised.value.code == "invalid_query" and isinstance(raised.value, ValueError)
    with pytest.raises(InvalidQuery):
        synthetic_catalog.similar_to_vector(vector, k=k)
    assert len(synthetic_catalog.similar("rec-0000001", k=1)) == 1


@pytest.mark.parametrize(("vector", "why"), [
    (synthetic_record(1).vector_array()[:100], "shape"),
    (np.append(synthetic_record(1).vector_array(), 1.0), "shape"),
    (synthetic_record(1).vector_array().reshape(1, -1), "shape"),
    (["a"] * 530, "non-numbers"),
    ([[1.0, 2.0], [3.0]], "not a flat sequence"),
    ([True] * 530, "non-numbers"),
    (np.full(530, np.nan), "NaN"),
    (np.full(530, 1e300), "infinite"),
])
def test_a_malformed_query_vector_is_an_invalid_query(synthetic_catalog: previewvec.Catalog,
                                                      vector: object, why: str) -> None:
    """Given a query vector of the wrong length, of non-numbers or not finite, expect the
    typed input error naming why, never a builtin ValueError or an index-down error."""
    with pytest.raises(InvalidQuery, match=why):
        synthetic_catalog.similar_to_vector(vector, k=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match=why):
        synthetic_catalog._reducer.similar_to_vector(vector, 3)  # type: ignore[arg-type]


def test_a_list_of_floats_and_a_zero_vector_are_valid_queries(
        synthetic_catalog: previewvec.Catalog) -> None:
    vector = [float(x) for x in synthetic_record(2).vector_array()]
    assert synthetic_catalog.similar_to_vector(vector, k=1)[0].recording_id == "rec-0000002"
    assert len(synthetic_catalog.similar_to_vector(np.zeros(530), k=2)) == 2


def test_records_matrix_and_table_name_each_skipped_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Given a store with one truncated record among three, expect the two others from
    records(), matrix(), table(), batches() and fma_frame(), a warning naming the bad
    key each time, and the skip counted when a ReadCounts is passed."""
    import logging

    from previewvec.export import ReadCounts

    catalog = previewvec.open(settings=Settings(store=str(tmp_path / "store"),
                                                index=str(tmp_path / "index")))
    keys = []
    for i in range(3):
        record = synthetic_record(i)
        catalog.store.put(record.key, encode_record(record))
        keys.append(record.key)
    catalog.store.put(keys[1], catalog.store.get(keys[1])[:50])
    for read in (lambda c: list(catalog.records(counts=c)),
                 lambda c: catalog.matrix(counts=c),
                 lambda c: catalog.table(counts=c),
                 lambda c: list(catalog.batches(counts=c)),
                 lambda c: catalog.fma_frame(counts=c)):
        counts = ReadCounts()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="previewvec.export"):
            read(counts)
        assert (counts.read, counts.skipped) == (2, 1)
        assert [r.levelname for r in caplog.records if keys[1] in r.getMessage()] == [
            "WARNING"]
    assert sorted(catalog.matrix()[1]) == ["rec-0000000", "rec-0000002"]


@pytest.mark.parametrize(("call", "why"), [
    (lambda c: c.similar("rec-0000001", k=10**20), "at most"),
    (lambda c: c.similar_to_vector(synthetic_record(1).vector_array(), k=10**20), "at most"),
    (lambda c: c.similar("rec-0000001", k=3, key="H"), "key"),
    (lambda c: c.similar("rec-0000001", k=3, mode="Minor"), "mode"),
    (lambda c: c.similar("rec-0000001", k=3, tempo=90), "tempo_min"),
    (lambda c: c.similar("rec-0000001", k=3, tempo_min="fast"), "tempo_min"),
    (lambda c: c.similar("rec-0000001", k=3, tempo_max=float("nan")), "tempo_max"),
    (lambda c: c.similar("rec-0000001", k=3, tempo_min=True), "tempo_min"),
    (lambda c: c.similar("rec-0000001", k=3, tempo_min=120, tempo_max=90), "above"),
    # from the data-scientist review: a silent [] and a pandas TypeError before
    (lambda c: c.similar("rec-0000001", k=3, tempo_max=-5), "tempo_max"),
    (lambda c: c.similar("rec-0000001", k=3, key=pd.NA), "key"),
    (lambda c: c.similar("rec-0000001", k=3, mode=float("nan")), "mode"),
])
def test_an_impossible_k_or_filter_is_an_invalid_query(synthetic_catalog: previewvec.Catalog,
                                                       call, why: str) -> None:
    """Given k beyond what the index takes (an OverflowError from LanceDB before) or a
    key/mode no record has (a silent [] before), expect the typed input error."""
    with pytest.raises(InvalidQuery, match=why):
        call(synthetic_catalog)


def test_numpy_numbers_are_a_k_and_a_tempo(synthetic_catalog: previewvec.Catalog) -> None:
    """Given k and tempo bounds as numpy scalars (read off a matrix or a frame), expect
    the answer of the same Python numbers (were InvalidQuery and LanceDB's TypeError)."""
    catalog = synthetic_catalog
    plain = catalog.similar("rec-0000001", k=5, tempo_min=60.0, tempo_max=75.0)
    assert plain
    numpy = catalog.similar("rec-0000001", k=np.int64(5), tempo_min=np.float32(60.0),
                            tempo_max=np.int32(75))
    assert numpy == plain
    vector = synthetic_record(1).vector_array()
    assert (catalog.similar_to_vector(vector, k=np.int32(2), tempo_min=np.float64(60))
            == catalog.similar_to_vector(vector, k=2, tempo_min=60))


def test_similar_on_an_index_never_built_is_nothing_stored(tmp_path: Path) -> None:
    """Given stored records but no index yet (nothing reduced), expect NothingStored
    saying to reduce, as `previewvec similar` exits 6, not [] as if nothing were alike;
    a filter nothing matches on a built index stays []."""
    from contract.errors import NothingStored

    settings = Settings(store=str(tmp_path / "store"), index=str(tmp_path / "index"))
    catalog = previewvec.open(settings=settings)
    for i in range(3):
        record = synthetic_record(i)
        catalog.store.put(record.key, encode_record(record))
    vector = synthetic_record(1).vector_array()
    with pytest.raises(NothingStored, match="reduce"):
        catalog.similar("rec-0000001", k=2)
    with pytest.raises(NothingStored, match="reduce"):
        catalog.similar_to_vector(vector, k=2)
    # a query makes no index (a mistyped PREVIEWVEC_INDEX made an empty one)
    assert not (tmp_path / "index").exists()
    Reducer.build(settings).reindex()
    assert len(catalog.similar("rec-0000001", k=2)) == 2
    assert catalog.similar_to_vector(vector, k=2, tempo_min=500) == []


def test_open_takes_pathlib_paths(tmp_path: Path) -> None:
    """Given the store and index folders as ``pathlib.Path`` (an AttributeError before),
    expect the catalog of their text paths."""
    catalog = previewvec.open(tmp_path / "store", index=tmp_path / "index")
    assert catalog.settings.store == str(tmp_path / "store")
    assert catalog.settings.index == str(tmp_path / "index")
    record = synthetic_record(1)
    catalog.store.put(record.key, encode_record(record))
    assert catalog.matrix()[1] == ["rec-0000001"]


def test_open_of_a_mistyped_folder_reads_as_an_error_not_an_empty_catalog(
        tmp_path: Path) -> None:
    """Given a store folder that does not exist, expect records(), matrix(), table() and
    record() to raise StoreFolderMissing naming it (not an empty catalog), and no folder
    to be created by opening or reading."""
    from contract.errors import StoreFolderMissing

    catalog = previewvec.open(tmp_path / "sotre", index=tmp_path / "index")
    reads = (lambda: list(catalog.records()), catalog.matrix, catalog.table,
             lambda: catalog.record("rec-0000001"))
    for read in reads:
        with pytest.raises(StoreFolderMissing, match="sotre: the folder does not exist"):
            read()
    assert not (tmp_path / "sotre").exists()


def test_the_api_is_listed_by_dir() -> None:
    """Given the lazily imported API, expect dir(previewvec) to list it (a notebook's
    tab completion reads dir), as ``__all__`` does; the errors it raises are among it."""
    assert set(previewvec.__all__) <= set(dir(previewvec))
    assert all(getattr(previewvec, name) for name in previewvec.__all__)
    assert issubclass(previewvec.InvalidQuery, previewvec.PreviewvecError)


@pytest.mark.parametrize("version", ["bogus", "pv8/13", "..", "PV8", "pv8-xyz"])
def test_open_of_a_version_that_cannot_be_is_an_invalid_query(tmp_path: Path,
                                                              version: str) -> None:
    """From the data-scientist review: any string was taken and read as an empty catalog
    (or "pv8/13" as one shard of pv8), where the CLI refuses it."""
    (tmp_path / "store").mkdir()
    with pytest.raises(previewvec.InvalidQuery, match="not a feature version"):
        previewvec.open(tmp_path / "store", version=version)


def test_a_corrupt_index_is_a_typed_index_error(tmp_path: Path) -> None:
    """Given an index whose data files were overwritten, expect VectorIndexError naming
    the index, not LanceDB's RuntimeError."""
    from contract.errors import VectorIndexError

    settings = Settings(store=str(tmp_path / "store"), index=str(tmp_path / "index"))
    catalog = previewvec.open(settings=settings)
    for i in range(3):
        record = synthetic_record(i)
        catalog.store.put(record.key, encode_record(record))
    Reducer.build(settings).reindex()
    for path in (tmp_path / "index").glob("**/data/*.lance"):
        path.write_bytes(b"garbage")
    with pytest.raises(VectorIndexError, match="cannot read the vector index"):
        previewvec.open(settings=settings).similar("rec-0000001", k=2)
    with pytest.raises(VectorIndexError, match="cannot read the vector index"):
        previewvec.open(settings=settings).similar_to_vector(
            synthetic_record(1).vector_array(), k=2)
