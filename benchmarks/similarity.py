"""Similarity that is measured: does ``similar`` find the other excerpt of the same song,
and neighbours of the same album or style? (issue 16, point 6)

For every track, two 30 s excerpts about 40 s apart (starting at 10 s and 50 s) are cut,
one encoded as AAC 256 kbit/s at 0 dB and the other as MP3 128 kbit/s at -6 dB (which
window gets which encoding alternates from track to track), as two stores would serve
them. All excerpts go through the real path once: ``producers.queue.publish`` → private
Redis → a ``celery -A workers.app worker`` (fetch over HTTP from 127.0.0.1, decode,
extract, store to a folder) → ``Reducer.drain()`` into a fresh embedded index. Then

  * the index as the reducer built it is queried through ``Reducer.similar`` (today's
    default, the baseline row), and
  * the stored raw vectors (read through ``previewvec.lib.Catalog.matrix``, the export
    API) are re-normalised offline for every choice of normalisation (z-score as today,
    robust z, PCA whitening), feature-block weighting and distance (cosine, euclidean),

scoring recall@1 / recall@10 of the other excerpt of the same track (queries by either
excerpt, the query excluded) and precision@10 of same-album neighbours (the query and
its own other excerpt excluded: they would count the track, not the album). A control
catalog holds the first window only, in both encodings: what codec, bit rate and gain
alone change, against what moving 40 s into the track changes.

Real music: full tracks of freely licensed game soundtracks from Debian, the album
(soundtrack) as the style label. Install them with

    apt-get install --no-install-recommends wesnoth-1.16-music singularity-music \\
        hyperrogue-music drascula-music fretsonfire-songs-muldjord \\
        fretsonfire-songs-sectoid supertux-data hedgewars-data planetblupi-music-ogg \\
        colobot-common-sounds

Albums are split once, by name, into a tuning part (the defaults are chosen on it) and a
held-out part (reported, never used to choose). Rendered songs (``testkit.songs``, the
style as label) run as a second, separate catalog: they are far easier.

    python benchmarks/similarity.py       # ~330 real (+ as many control) + 60 rendered
    python benchmarks/similarity.py --songs 0 --json similarity.json
    python benchmarks/similarity.py --album mine=/music/album1 --album other=/music/album2
"""

from __future__ import annotations

from _percore import pin_one_thread, stop_workers

_NUMBA_CACHE_DIR = pin_one_thread("benchmarks/similarity.py")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from contract.settings import Settings  # noqa: E402

NATIVE_SR = 44100
EXCERPT_S = 30.0
STARTS_S = (10.0, 50.0)  # 40 s apart; a track needs STARTS_S[1] + EXCERPT_S seconds
MIN_TRACK_S = STARTS_S[1] + EXCERPT_S
# (format, bit rate, gain dB): as two stores would serve the same song.
ENCODINGS = (("m4a", 256_000, 0.0), ("mp3", 128_000, -6.0))
EXCERPT_FORMAT_VERSION = "v1"
TARGET_R1, TARGET_R10 = 0.8, 0.95

# Debian packages of full tracks of freely licensed music: label, folder, package.
DEFAULT_ALBUMS: tuple[tuple[str, str, str], ...] = (
    ("wesnoth", "/usr/share/games/wesnoth/1.16/data/core/music", "wesnoth-1.16-music"),
    ("singularity", "/usr/share/games/singularity/music", "singularity-music"),
    ("hyperrogue", "/usr/share/hyperrogue/music", "hyperrogue-music"),
    ("drascula", "/usr/share/scummvm/drascula/audio", "drascula-music"),
    ("fof-muldjord", "/usr/share/games/fretsonfire/data/songs/muldjord",
     "fretsonfire-songs-muldjord"),
    ("fof-sectoid", "/usr/share/games/fretsonfire/data/songs/sectoid",
     "fretsonfire-songs-sectoid"),
    ("supertux", "/usr/share/games/supertux2/music", "supertux-data"),
    ("hedgewars", "/usr/share/games/hedgewars/Data/Music", "hedgewars-data"),
    ("planetblupi", "/usr/share/planetblupi/music", "planetblupi-music-ogg"),
    ("colobot", "/usr/share/games/colobot/music", "colobot-common-sounds"),
)
# The fixed split: these albums are never looked at when choosing defaults.
HELD_OUT = frozenset({"singularity", "hyperrogue", "fof-sectoid", "planetblupi", "colobot"})
AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav", ".opus", ".m4a")


# --------------------------------------------------------------------------- excerpts


def _decode_native(path: Path) -> np.ndarray:
    """The whole file as float32 (2, n) at 44.1 kHz (mono is duplicated)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=NATIVE_SR)
        parts = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray())
        for out in resampler.resample(None):
            parts.append(out.to_ndarray())
    return np.concatenate(parts, axis=1).astype(np.float32)


def find_tracks(folder: Path) -> list[Path]:
    """Audio files under ``folder``; in a Frets on Fire song folder only the mix
    (``song.ogg``), not the separate guitar/rhythm stems."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        if (path.parent / "song.ogg").exists() and path.name != "song.ogg":
            continue
        files.append(path)
    return files


def _write_pair(audio: np.ndarray, out: Path, stem: str, swap: bool,
                starts: tuple[float, float] = STARTS_S) -> list[str]:
    """Cut, gain and encode the two excerpts of one track; returns their file names."""
    from testkit.encode import encode_audio

    names = []
    n = round(EXCERPT_S * NATIVE_SR)
    for window, start_s in enumerate(starts):
        fmt, bitrate, gain_db = ENCODINGS[(window + swap) % 2]
        start = round(start_s * NATIVE_SR)
        piece = audio[:, start : start + n] * np.float32(10 ** (gain_db / 20))
        name = f"{stem}-{window}.{fmt}"
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(encode_audio(piece, NATIVE_SR, fmt, bitrate=bitrate))
        tmp.rename(out / name)
        names.append(name)
    return names


def prepare_real(albums: list[tuple[str, Path]], cache: Path) -> tuple[list[dict], list[dict]]:
    """Excerpt every long-enough track of every album (cached by file path and size).
    Also returns the control: the first window only, in both encodings (what the
    encodings and gains alone change)."""
    import av

    items, control = [], []
    for label, folder in albums:
        tracks = find_tracks(folder)
        kept = 0
        for i, path in enumerate(tracks):
            key = hashlib.sha1(f"{EXCERPT_FORMAT_VERSION}:{path}:{path.stat().st_size}"
                               .encode()).hexdigest()[:12]
            stem = f"{label}-{key}"
            out, out_control = cache / "real", cache / "control"
            out.mkdir(parents=True, exist_ok=True)
            out_control.mkdir(parents=True, exist_ok=True)
            marker = out / f"{stem}.json"
            meta = json.loads(marker.read_text()) if marker.exists() else {}
            if "control" not in meta:
                try:
                    audio = _decode_native(path)
                except (av.FFmpegError, OSError, ValueError) as exc:  # a file PyAV cannot read
                    print(f"  skipped {path}: {exc}")
                    meta = {"files": [], "control": [], "duration_s": 0.0}
                else:
                    duration = audio.shape[1] / NATIVE_SR
                    long_enough = duration >= MIN_TRACK_S
                    first = (STARTS_S[0], STARTS_S[0])
                    meta = {"files": (_write_pair(audio, out, stem, i % 2 == 1)
                                      if long_enough else []),
                            "control": (_write_pair(audio, out_control, stem, i % 2 == 1,
                                                    first) if long_enough else []),
                            "duration_s": duration}
                marker.write_text(json.dumps(meta))
            if meta["files"]:
                kept += 1
                items.append({"track": stem, "label": label, "source": str(path),
                              "files": meta["files"], "folder": str(out)})
                control.append({**items[-1], "files": meta["control"],
                                "folder": str(out_control)})
        print(f"  {label}: {kept} of {len(tracks)} tracks >= {MIN_TRACK_S:g} s ({folder})")
    return items, control


def prepare_rendered(n: int, cache: Path, seed: int = 16) -> list[dict]:
    """``n`` rendered songs of 85 s (testkit.songs), their style as the label."""
    from testkit.songs.dataset import eval_specs
    from testkit.songs.render import render
    from testkit.songs.score import generate_song

    out = cache / "rendered"
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for i, spec in enumerate(eval_specs(n, seed)):
        stem = f"song-{seed}-{i:03d}"
        marker = out / f"{stem}.json"
        if marker.exists():
            meta = json.loads(marker.read_text())
        else:
            score = generate_song(spec.seed, tonic=spec.tonic, mode=spec.mode,
                                  tempo_bpm=spec.tempo_bpm, drums=spec.drums,
                                  duration_s=MIN_TRACK_S + 5, style=spec.style)
            audio = render(score, sr=NATIVE_SR, renderer="synth")
            if audio.ndim == 1:
                audio = np.stack([audio, audio])
            meta = {"files": _write_pair(np.asarray(audio, np.float32), out, stem, i % 2 == 1),
                    "style": score.style}
            marker.write_text(json.dumps(meta))
        items.append({"track": stem, "label": meta["style"], "source": "rendered",
                      "files": meta["files"], "folder": str(out)})
    return items


# --------------------------------------------------------------------------- real path


def index_through_real_path(items: list[dict], work: Path) -> Settings:
    """Publish every excerpt, featurize with one Celery worker, drain into a fresh index.
    Returns the settings of that store and index."""
    from contract.jobs import Job
    from contract.state import Runs, new_run_id
    from previewvec.demo import serve_folder
    from previewvec.localredis import LocalRedis
    from producers.queue import publish
    from reducer.reduce import Reducer

    folder = Path(items[0]["folder"])
    work.mkdir(parents=True, exist_ok=True)
    store, index = str(work / "store"), str(work / "index")
    with LocalRedis() as local_redis, serve_folder(folder) as base_url:
        settings = dataclasses.replace(Settings(), broker_url=local_redis.url, store=store,
                                       index=index, allowed_audio_hosts=("127.0.0.1",))
        env = {**os.environ, "PREVIEWVEC_BROKER_URL": local_redis.url,
               "PREVIEWVEC_STORE": store, "PREVIEWVEC_INDEX": index,
               "PREVIEWVEC_ALLOWED_AUDIO_HOSTS": "127.0.0.1"}
        log_path = work / "worker.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--concurrency",
             "1", "--hostname", "simbench@%h", "--queues", "ondemand,batch", "--loglevel",
             "info", "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        try:
            runs = Runs.from_url(local_redis.url)
            run_id = new_run_id()
            runs.create(run_id, queue="batch", source="bench")
            jobs = [Job(recording_id=Path(name).stem, preview_url=f"{base_url}/{name}",
                        source="bench") for item in items for name in item["files"]]
            t0 = time.perf_counter()
            publish(jobs, runs, settings, run_id=run_id, queue="batch")
            deadline = t0 + 300 + 20 * len(jobs)
            while (counts := runs.status(run_id).counts)["queued"] > 0:
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"run did not finish; see {log_path}")
                time.sleep(0.2)
            print(f"  featurized {len(jobs)} excerpts in {time.perf_counter() - t0:.0f} s: "
                  f"{counts}")
            reducer = Reducer.build(settings)
            reducer.drain()
            reducer.index.wait_for_writes()
            print(f"  indexed {reducer.index.count()} vectors")
        finally:
            stop_workers([proc])
    return settings


# --------------------------------------------------------------------------- choices


def blocks() -> list[np.ndarray]:
    """Dimension indices of each feature block: FMA's 11 families, then rhythm, tonal,
    loudness and meta of the descriptor block."""
    from contract.layout import feature_names

    groups: dict[str, list[int]] = {}
    for i, name in enumerate(feature_names()):
        groups.setdefault(name.split(".")[0], []).append(i)
    return [np.asarray(v) for v in groups.values()]


def block_weights(power: float) -> np.ndarray:
    """Per-dimension weights ``size ** -power`` of each dimension's block: 0 weighs every
    dimension alike (today), 0.5 gives every block the same expected share of the
    squared norm, whatever its size."""
    from contract.layout import VECTOR_DIM

    w = np.ones(VECTOR_DIM)
    for idx in blocks():
        w[idx] = len(idx) ** -power
    return w


Transform = Callable[[np.ndarray], np.ndarray]


def fit_zscore(x: np.ndarray) -> Transform:
    from reducer.normalize import Normalizer

    norm = Normalizer.fit(x, "bench")
    return lambda v: norm.apply(v).astype(np.float64)


def fit_robust(x: np.ndarray) -> Transform:
    med = np.median(x, axis=0)
    q75, q25 = np.percentile(x, [75, 25], axis=0)
    scale = (q75 - q25) / 1.349  # the IQR of a normal distribution, in deviations
    std = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, std)  # a dimension with mostly one value
    usable = scale > 1e-9
    safe = np.where(usable, scale, 1.0)
    return lambda v: np.where(usable, np.clip((v - med) / safe, -8, 8), 0.0)


def fit_pca(x: np.ndarray, weights: np.ndarray, keep: float) -> Transform:
    """z-score, weight, then PCA whitening on the components that explain ``keep`` of the
    variance."""
    z = fit_zscore(x)
    zx = z(x) * weights
    mean = zx.mean(axis=0)
    _, s, vt = np.linalg.svd(zx - mean, full_matrices=False)
    var = s**2 / max(1, len(zx) - 1)
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), keep) + 1)
    proj = vt[:k].T / np.sqrt(var[:k])
    return lambda v: (z(v) * weights - mean) @ proj


NORMALISATIONS = ("z-score", "robust z", "PCA-whiten 95%", "PCA-whiten 99%")
WEIGHTINGS = {"per-dimension": 0.0, "block^-1/4": 0.25, "per-block": 0.5}
# "cosine-CSLS": cosine less each candidate's mean similarity to its 10 nearest
# neighbours (hubness reduction, as in cross-domain similarity local scaling); measured
# here only, the index serves plain cosine.
DISTANCES = ("cosine", "euclidean", "cosine-CSLS")
CSLS_K = 10


def embed(x: np.ndarray, normalisation: str, power: float) -> np.ndarray:
    w = block_weights(power)
    if normalisation == "z-score":
        return fit_zscore(x)(x) * w
    if normalisation == "robust z":
        return fit_robust(x)(x) * w
    keep = 0.95 if "95" in normalisation else 0.99
    return fit_pca(x, w, keep)(x)


def ranking(e: np.ndarray, distance: str) -> np.ndarray:
    """Row i: every other row, nearest first (self last)."""
    if distance.startswith("cosine"):
        u = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        d = 1.0 - u @ u.T
        if distance == "cosine-CSLS":
            near = np.sort(np.where(np.eye(len(d), dtype=bool), np.inf, d), axis=1)
            hub = 1.0 - near[:, :CSLS_K].mean(axis=1)  # mean similarity to its neighbours
            # 2 cos(q, x) - r(x) - r(q) as a distance; r(q) ranks nothing differently
            d = d + 0.5 * hub[None, :]
    else:
        sq = (e**2).sum(axis=1)
        d = np.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0.0)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")


def hits(order: np.ndarray, track: np.ndarray, label: np.ndarray,
         queries: np.ndarray) -> dict[str, np.ndarray]:
    """Per query (row indices ``queries``): the other excerpt first (r1), in the first 10
    (r10), and the share of same-label neighbours among the first 10 once the query and
    its other excerpt are left out (p10)."""
    out = {"r1": np.zeros(len(queries)), "r10": np.zeros(len(queries)),
           "p10": np.zeros(len(queries))}
    for j, q in enumerate(queries):
        row = order[q][:-1]  # the query itself sorts last
        same_track = track[row] == track[q]
        out["r1"][j] = same_track[0]
        out["r10"][j] = same_track[:10].any()
        out["p10"][j] = (label[row[~same_track][:10]] == label[q]).mean()
    return out


def delta_ci(row: np.ndarray, base: np.ndarray, groups: np.ndarray,
             n_boot: int = 2000) -> tuple[float, float]:
    """95 % bootstrap interval of mean(row - base), resampling tracks (a track's two
    queries are not independent). Fixed seed: the same data give the same interval."""
    rng = np.random.default_rng(0)
    _, inverse = np.unique(groups, return_inverse=True)
    per_track = np.bincount(inverse, row - base) / np.bincount(inverse)
    weights = np.bincount(inverse).astype(float)
    picks = rng.integers(0, len(per_track), (n_boot, len(per_track)))
    means = (per_track[picks] * weights[picks]).sum(axis=1) / weights[picks].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def index_ranking(settings: Settings, ids: list[str]) -> np.ndarray:
    """Today's default as served: ``Reducer.similar`` on the index the reducer built."""
    from reducer.reduce import Reducer

    reducer = Reducer.build(settings)
    pos = {rid: i for i, rid in enumerate(ids)}
    order = np.empty((len(ids), len(ids)), dtype=np.int64)
    for i, rid in enumerate(ids):
        found = [pos[m.metadata["recording_id"]] for m in reducer.similar(rid, len(ids) - 1)]
        order[i] = [*found, i]
    return order


def ablations() -> dict[str, np.ndarray]:
    """Per-dimension weights that leave out one part of the vector: each FMA statistic
    (over every family), each block, and the level-dependent dimensions (a preview's gain
    is the store's, not the music's)."""
    from contract.layout import FMA_STATISTICS, VECTOR_DIM, feature_names

    names = feature_names()
    out: dict[str, np.ndarray] = {}

    def without(label: str, drop: Callable[[str], bool]) -> None:
        out[label] = np.asarray([0.0 if drop(n) else 1.0 for n in names])

    for statistic in FMA_STATISTICS:
        without(f"without FMA's {statistic}", lambda n, s=statistic: n.split(".")[1:2] == [s])
    for idx in blocks():
        block = names[int(idx[0])].split(".")[0]
        without(f"without {block}", lambda n, b=block: n.split(".")[0] == b)
    level = {"loudness.integrated_lufs", "loudness.energy",
             *(f"mfcc.{s}.01" for s in ("mean", "median", "min", "max"))}
    without("without level (rmse, LUFS, energy, MFCC 1's location)",
            lambda n: n.startswith("rmse.") or n in level)
    assert all(w.shape == (VECTOR_DIM,) for w in out.values())
    return out


def evaluate(settings: Settings, items: list[dict], parts: dict[str, set[str]],
             with_ablations: bool = False) -> list[dict]:
    """Every choice's scores per part (queries from that part's albums; the pool is the
    whole catalog, as ``similar`` searches it). Row 0 is the index as served.
    ``with_ablations``: also z-score/cosine with each part of the vector left out."""
    from previewvec.lib import Catalog

    x, ids = Catalog(settings).matrix()
    x = x.astype(np.float64)
    by_file = {Path(name).stem: item for item in items for name in item["files"]}
    track = np.asarray([by_file[i]["track"] for i in ids])
    label = np.asarray([by_file[i]["label"] for i in ids])
    # A query needs its other excerpt in the catalog: the workers refuse an excerpt that
    # is digitally silent (a track with a long pause), which leaves its partner alone.
    _, inverse, counts = np.unique(track, return_inverse=True, return_counts=True)
    paired = counts[inverse] == 2
    queries = {part: np.flatnonzero(np.isin(label, sorted(labels)) & paired)
               for part, labels in parts.items()}
    lone = int((~paired).sum())
    if lone:
        print(f"  {lone} excerpts without their other excerpt: in the pool, not queried")
    rows: list[dict] = []

    def add(name: tuple[str, str, str], order: np.ndarray) -> None:
        row: dict = {"normalisation": name[0], "weighting": name[1], "distance": name[2]}
        for part, q in queries.items():
            per_query = hits(order, track, label, q)
            row[part] = {m: float(v.mean()) for m, v in per_query.items()}
            row[part]["queries"] = len(q)
            base = rows[0][part]["_hits"] if rows else per_query
            row[part]["r1_delta_ci"] = delta_ci(per_query["r1"], base["r1"], track[q])
            row[part]["_hits"] = per_query
        rows.append(row)

    add(("today: the index", "(as served)", "cosine"), index_ranking(settings, ids))
    for normalisation in NORMALISATIONS:
        for weighting, power in WEIGHTINGS.items():
            e = embed(x, normalisation, power)
            for distance in DISTANCES:
                add((normalisation, weighting, distance), ranking(e, distance))
    if with_ablations:
        z = fit_zscore(x)(x)
        for left_out, weights in ablations().items():
            add(("z-score", left_out, "cosine"), ranking(z * weights, "cosine"))
    if "tuning" in queries:
        # Supervised check: a per-dimension weight learned from the tuning part's pairs
        # (Fisher ratio: spread across tracks over spread within a track). If the feature
        # set held a track-stable subset, this would find it and carry to the held-out part.
        z = fit_zscore(x)(x)
        pairs: dict[str, list[int]] = {}
        for i in queries["tuning"]:
            pairs.setdefault(str(track[i]), []).append(int(i))
        diff = np.asarray([z[a] - z[b] for a, b in pairs.values()])
        within = (diff**2).mean(axis=0) / 2 + 1e-3
        total = z[np.isin(label, sorted(parts["tuning"]))].var(axis=0) + 1e-3
        learned = np.sqrt(np.maximum(total - within, 0.0) / within)
        for distance in ("cosine", "cosine-CSLS"):
            add(("z-score", "learned (tuning)", distance), ranking(z * learned, distance))
    for row in rows:
        for part in queries:
            del row[part]["_hits"]
    return rows


def print_table(title: str, rows: list[dict], parts: list[str]) -> None:
    """A markdown table: each metric with its ratio to row 0 (today), and the 95 %
    interval of the change in R@1."""
    base = rows[0]
    print(f"\n{title}\n")
    head = "| normalisation | weighting | distance |"
    rule = "|---|---|---|"
    for part in parts:
        n = base[part]["queries"]
        head += f" {part} R@1 (n={n}) | R@1 change, 95 % CI | R@10 | P@10 |"
        rule += "---:|---:|---:|---:|"
    print(head)
    print(rule)
    for row in rows:
        line = f"| {row['normalisation']} | {row['weighting']} | {row['distance']} |"
        for part in parts:
            cells = []
            for m in ("r1", "r10", "p10"):
                v, b = row[part][m], base[part][m]
                cells.append(f"{v:.3f} ({v / b:.2f}x)" if b else f"{v:.3f}")
            lo, hi = row[part]["r1_delta_ci"]
            line += f" {cells[0]} | {lo:+.3f} .. {hi:+.3f} | {cells[1]} | {cells[2]} |"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--album", action="append", default=[], metavar="LABEL=DIR",
                    help="an album/soundtrack folder (repeatable; default: the Debian "
                         "packages named in the docstring)")
    ap.add_argument("--held-out", default=",".join(sorted(HELD_OUT)),
                    help="comma-separated album labels kept out of tuning")
    ap.add_argument("--songs", type=int, default=30, help="rendered songs (0: none)")
    ap.add_argument("--work", type=Path, default=None, help="keep store/index here")
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate the stores and indexes already in --work (no indexing)")
    ap.add_argument("--ablations", action="store_true",
                    help="also rank with each FMA statistic, each block and the "
                         "level-dependent dimensions left out (z-score, cosine)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.reuse and not args.work:
        ap.error("--reuse needs --work")
    print("`" + shlex.join(["python", "benchmarks/similarity.py", *sys.argv[1:]]) + "`\n")

    cache = Settings.from_env().cache_dir / "bench-similarity" / EXCERPT_FORMAT_VERSION
    if args.album:
        albums = [(a.split("=", 1)[0], Path(a.split("=", 1)[1])) for a in args.album]
    else:
        albums = [(label, Path(d)) for label, d, _ in DEFAULT_ALBUMS if Path(d).is_dir()]
        missing = [pkg for _, d, pkg in DEFAULT_ALBUMS if not Path(d).is_dir()]
        if missing:
            print(f"not installed (apt-get install {' '.join(missing)}): skipped")
    held_out = {s for s in args.held_out.split(",") if s}
    print(f"excerpts in {cache}")
    real, control = prepare_real(albums, cache)
    labels = {i["label"] for i in real}
    parts = {"tuning": labels - held_out, "held-out": labels & held_out}
    print(f"real: {len(real)} tracks, {len(labels)} albums; tuning {sorted(parts['tuning'])}, "
          f"held-out {sorted(parts['held-out'])}")
    work = args.work or Path(tempfile.mkdtemp(prefix="pv-similarity-"))
    results: dict[str, object] = {"albums": {lab: sum(i["label"] == lab for i in real)
                                             for lab in sorted(labels)}}
    def run(name: str, items: list[dict], parts: dict[str, set[str]], title: str) -> None:
        parts = {k: v for k, v in parts.items() if v}
        if args.reuse:
            settings = dataclasses.replace(Settings(), store=str(work / name / "store"),
                                           index=str(work / name / "index"))
        else:
            print(f"{name}: indexing through the real path")
            settings = index_through_real_path(items, work / name)
        rows = evaluate(settings, items, parts, with_ablations=args.ablations)
        results[name] = rows
        print_table(title, rows, list(parts))

    if real:
        run("real", real, parts, f"Real music: {len(real)} tracks, {len(labels)} albums "
            "(queries: both excerpts of every track of the part's albums; pool: all)")
        run("control", control, parts, "Control: the same window (10-40 s) in both "
            "encodings, i.e. what codec, bit rate and gain alone change")
    if args.songs:
        songs = prepare_rendered(args.songs, cache)
        run("rendered", songs, {"rendered": {i["label"] for i in songs}},
            f"Rendered songs ({len(songs)}; too easy; label: style)")
    print(f"\ntargets on real music: R@1 >= {TARGET_R1}, R@10 >= {TARGET_R10}; store and "
          f"index in {work}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
