"""Feature-extraction speed and FMA agreement: previewvec versus FMA's features.py, per core.

In one run, on the same 30 s clips (encoded in memory as AAC .m4a, 44.1 kHz stereo, like
store previews), this measures CPU seconds per clip, single-threaded, for

  (a) FMA reference, native rate: FMA's ``features.py`` calls (``fma_reference``) on the
      clip decoded to mono at its own sample rate (44.1 kHz), as ``librosa.load(sr=None)``
      does in FMA (PyAV decodes: librosa cannot read AAC without ffmpeg);
  (b) FMA reference, 22.05 kHz: the same calls on the clip decoded at 22050 Hz;
  (c) previewvec: ``analyze(bytes, Settings())``, the full 530-d vector, decode included;

then the agreement of (c)'s FMA block with (a) and with (b): the per-dimension Pearson
correlation across clips and the share of dimensions within 1 % and 2 %; a per-stage
breakdown of (c); and the cold start of a fresh worker process (imports + warm-up, then
its first clip).

The clips are generated songs, or with ``--audio-dir`` real music: a 30 s excerpt of each
audio file in the folder (from ``--offset`` seconds), re-encoded as the previews are.

    python benchmarks/extract.py                   # 24 clips, ~2 minutes on 2 cores
    python benchmarks/extract.py --clips 48 --json extract.json
    python benchmarks/extract.py --audio-dir /usr/share/games/wesnoth/1.16/data/core/music
"""

from __future__ import annotations

import os
import sys

from _percore import THREAD_VARS as _THREAD_VARS
from _percore import pin_one_thread

from contract.settings import Settings

_NUMBA_CACHE_DIR = pin_one_thread("benchmarks/extract.py")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402

from contract.errors import PreviewvecError  # noqa: E402
from contract.layout import FMA_DIM, FMA_FEATURE_SIZES, fma_names  # noqa: E402
from testkit.encode import encode_audio  # noqa: E402
from testkit.fma_reference import fma_reference  # noqa: E402
from testkit.songs.render import find_soundfont, render, resolve_renderer  # noqa: E402
from testkit.songs.score import MODES, NOTE_NAMES, STYLES, generate_song, styles_for  # noqa: E402
from workers.analysis import analyze  # noqa: E402
from workers.audio import decode_audio  # noqa: E402
from workers.features.extractor import warm_up  # noqa: E402

CLIP_S = 30.0
NATIVE_SR = 44100
ANALYSIS_SR = 22050
TARGET_SPEEDUP = 4.0
TARGET_MEDIAN_R = 0.99
TARGET_FIRST_CLIP_S = 3.0
# A dimension is "constant" across clips when its spread is at float32 rounding level.
CONSTANT_RTOL = 1e-6
WITHIN = 0.02  # "values within 2 %": |ours - ref| <= 2 % of |ref|
WITHIN_1 = 0.01
TARGET_WITHIN_1 = 0.90  # share of dimensions within 1 % of the native-rate reference

METHODS: tuple[tuple[str, str], ...] = (
    ("fma_native", "FMA reference, native rate (44.1 kHz)"),
    ("fma_22k", "FMA reference, 22.05 kHz"),
    ("previewvec", "previewvec, full 530-d vector"),
)


@dataclass(frozen=True)
class Clip:
    index: int
    style: str
    key: str
    tempo_bpm: float
    drums: bool
    data: bytes
    duration_s: float


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    fma: np.ndarray
    timings_s: dict[str, float]


# --------------------------------------------------------------------------- clips


def make_clips(n: int, seed: int, fmt: str, renderer: str) -> list[Clip]:
    """``n`` varied 30 s songs (style, key, mode, tempo, drums), encoded at 44.1 kHz stereo."""
    rng = random.Random(seed)
    clips = []
    for i in range(n):
        tempo = round(rng.uniform(66, 172), 1)
        candidates = styles_for(tempo) or STYLES
        style = candidates[i % len(candidates)]
        tonic, mode = rng.randrange(12), MODES[i % 2]
        drums = i % 4 != 3
        score = generate_song(seed + i, tonic=tonic, mode=mode, tempo_bpm=tempo, drums=drums,
                              duration_s=CLIP_S, style=style)
        audio = render(score, NATIVE_SR, renderer)[:, : round(CLIP_S * NATIVE_SR)]
        clips.append(Clip(i, style, f"{NOTE_NAMES[tonic]} {mode}", tempo, drums,
                          encode_audio(audio, NATIVE_SR, fmt), audio.shape[1] / NATIVE_SR))
    return clips


def real_clips(folder: Path, n: int, offset_s: float, fmt: str) -> list[Clip]:
    """A 30 s excerpt (from ``offset_s``, or the start of a shorter file) of each of the
    first ``n`` audio files of ``folder`` long enough for one, encoded as the previews."""
    clips: list[Clip] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".ogg", ".mp3",
                                                                            ".flac", ".wav")):
        if len(clips) >= n:
            break
        try:
            audio = decode_audio(str(path), sr=NATIVE_SR, max_duration_s=offset_s + CLIP_S,
                                 max_input_bytes=200_000_000)
        except PreviewvecError as exc:  # e.g. a file of silence: not music
            print(f"  skipped {path.name}: {exc.code}", file=sys.stderr, flush=True)
            continue
        signal = audio.channels if audio.channels is not None else audio.samples[np.newaxis]
        start = round(offset_s * NATIVE_SR)
        if signal.shape[1] < start + round(CLIP_S * NATIVE_SR):
            start = 0
        excerpt = signal[:, start: start + round(CLIP_S * NATIVE_SR)]
        if excerpt.shape[1] < round(CLIP_S * NATIVE_SR):
            continue
        clips.append(Clip(len(clips), path.stem, "?", float("nan"), True,
                          encode_audio(excerpt, NATIVE_SR, fmt), excerpt.shape[1] / NATIVE_SR))
    return clips


# --------------------------------------------------------------------------- methods


def fma_native(data: bytes) -> tuple[np.ndarray, dict[str, float]]:
    """FMA's features.py at the clip's own rate (``librosa.load(path, sr=None)``)."""
    started = time.perf_counter()
    audio = decode_audio(data, sr=NATIVE_SR)
    if audio.source_sr != NATIVE_SR:
        raise RuntimeError(f"clip is {audio.source_sr} Hz, expected {NATIVE_SR} Hz")
    decoded = time.perf_counter()
    fma = fma_reference(audio.samples, audio.sr)
    return fma, {"decode": decoded - started, "features": time.perf_counter() - decoded}


def fma_22k(data: bytes) -> tuple[np.ndarray, dict[str, float]]:
    """FMA's features.py on the clip decoded at 22050 Hz (previewvec's analysis rate)."""
    started = time.perf_counter()
    audio = decode_audio(data, sr=ANALYSIS_SR)
    decoded = time.perf_counter()
    fma = fma_reference(audio.samples, audio.sr)
    return fma, {"decode": decoded - started, "features": time.perf_counter() - decoded}


def previewvec(data: bytes) -> tuple[np.ndarray, dict[str, float]]:
    """The product: decode + every feature family, the full 530-d vector."""
    analysis = analyze(data, Settings())
    vector = analysis.features.vector
    assert vector.shape == (FMA_DIM + 12,), vector.shape
    return vector[:FMA_DIM].astype(np.float64), dict(analysis.timings_s)


FUNCTIONS: dict[str, Callable[[bytes], tuple[np.ndarray, dict[str, float]]]] = {
    "fma_native": fma_native,
    "fma_22k": fma_22k,
    "previewvec": previewvec,
}


def measure(clips: list[Clip]) -> dict[str, list[Run]]:
    """Warm every method on the first clip, then time each on every clip.

    previewvec is first warmed as a worker process warms itself at start
    (``extractor.warm_up()``: numba's kernels, the CQT bases and chroma banks of common
    tunings; its cost is the cold-start figure). The order of the methods rotates from
    clip to clip so that none always runs right after another (cache state, CPU
    frequency).
    """
    warm_up()
    for name in FUNCTIONS:
        FUNCTIONS[name](clips[0].data)
    runs: dict[str, list[Run]] = {name: [] for name in FUNCTIONS}
    names = list(FUNCTIONS)
    for clip in clips:
        k = clip.index % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            fma, timings = FUNCTIONS[name](clip.data)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            runs[name].append(Run(cpu, wall, fma, timings))
    return runs


# --------------------------------------------------------------------------- agreement


def _constant(x: np.ndarray) -> np.ndarray:
    spread = x.std(axis=0)
    return spread <= CONSTANT_RTOL * np.maximum(np.abs(x).mean(axis=0), 1e-30)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``a`` with the same column of ``b`` (rows = clips)."""
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((da**2).sum(axis=0) * (db**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (da * db).sum(axis=0) / denom


def agreement(ours: np.ndarray, ref: np.ndarray) -> dict:
    """Per-dimension correlation across clips, skipping dimensions constant in either."""
    names = np.array(fma_names())
    const_ours, const_ref = _constant(ours), _constant(ref)
    varying = ~(const_ours | const_ref)
    r_all = pearson_columns(ours, ref)
    r = r_all[varying]
    rel = np.abs(ours - ref) <= WITHIN * np.abs(ref)
    rel_1 = np.abs(ours - ref) <= WITHIN_1 * np.abs(ref)
    # Per dimension: its median relative error over the clips is at most 1 %.
    dim_error = np.median(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-30), axis=0)
    families = np.array([name.split(".")[0] for name in names])
    by_family = {}
    for family in FMA_FEATURE_SIZES:
        mask = varying & (families == family)
        values = r_all[mask]
        by_family[family] = {
            "dims": int((families == family).sum()),
            "correlated": int(mask.sum()),
            "median_r": float(np.median(values)) if values.size else float("nan"),
            "min_r": float(values.min()) if values.size else float("nan"),
        }
    order = np.argsort(r_all[varying])
    return {
        "median_r": float(np.median(r)),
        "p10_r": float(np.percentile(r, 10)),
        "n_r_ge_099": int((r >= 0.99).sum()),
        "n_correlated": int(varying.sum()),
        "n_constant_both": int((const_ours & const_ref).sum()),
        "n_constant_one": int((const_ours ^ const_ref).sum()),
        "constant_one_names": names[const_ours ^ const_ref].tolist(),
        "within_2pct_median_clip": float(np.median(rel.mean(axis=1))),
        "within_1pct_median_clip": float(np.median(rel_1.mean(axis=1))),
        "dims_within_1pct": float((dim_error <= WITHIN_1).mean()),
        "by_family": by_family,
        "lowest": [(str(names[varying][i]), float(r[i])) for i in order[:5]],
        "r_by_dim": {str(n): (float(v) if varying[j] else None)
                     for j, (n, v) in enumerate(zip(names, r_all, strict=True))},
    }


# --------------------------------------------------------------------------- cold start

# Runs in a fresh interpreter: only what a worker process does at start-up.
_COLD_START_CODE = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from contract.settings import Settings
from workers.analysis import analyze
from workers.features import extractor
t_import = time.perf_counter()
warm = getattr(extractor, "warm_up", None)
if sys.argv[2] == "none":
    how = "none"
elif callable(warm):
    warm()
    how = "extractor.warm_up()"
else:
    import numpy as np
    sr = 22050
    t = np.arange(6 * sr) / sr
    rng = np.random.default_rng(0)
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
         * (t % 0.5 < 0.25) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    extractor.extract_features(y, sr)
    how = "extract_features(6 s of tones + noise)"
t_warm = time.perf_counter()
ready_at = time.time()
data = open(sys.argv[1], "rb").read()
clips = []
for _ in range(2):
    w, c = time.perf_counter(), time.process_time()
    analyze(data, Settings())
    clips.append((time.perf_counter() - w, time.process_time() - c))
print(json.dumps({"import_s": t_import - t0, "warm_s": t_warm - t_import, "warm_up": how,
                  "ready_at": ready_at, "first_clip_s": clips[0][0],
                  "first_clip_cpu_s": clips[0][1], "second_clip_s": clips[1][0]}))
"""


def cold_start(clip: Clip, *, warm: bool, numba_cache_dir: str) -> dict:
    """A fresh process: imports, warm-up (or none), then two clips; wall seconds."""
    with tempfile.NamedTemporaryFile(suffix=".m4a") as handle:
        handle.write(clip.data)
        handle.flush()
        env = {**os.environ, "NUMBA_CACHE_DIR": numba_cache_dir}
        spawned = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", _COLD_START_CODE, handle.name, "warm" if warm else "none"],
            capture_output=True, text=True, env=env, check=False, timeout=600,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start process failed: {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["start_to_ready_s"] = result.pop("ready_at") - spawned
    return result


# --------------------------------------------------------------------------- report


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, "
            f"librosa {librosa.__version__}; one thread per process "
            f"({'/'.join(v.split('_')[0] for v in _THREAD_VARS)} = 1)")


def _fmt_r(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.4f}"


def bootstrap_speedup(reference: np.ndarray, ours: np.ndarray, *, draws: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """95 % interval of mean(reference) / mean(ours) over clips resampled in pairs (the
    same clip for both methods). It covers which clips were drawn, not the machine's
    drift between runs (the reference moves by several per cent from run to run)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, ours.size, size=(draws, ours.size))
    ratios = reference[picks].mean(axis=1) / ours[picks].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def report(args: argparse.Namespace, clips: list[Clip], renderer: str,
           runs: dict[str, list[Run]], agree: dict[str, dict], cold: dict[str, dict]) -> dict:
    lines: list[str] = []
    out = lines.append
    command = "python benchmarks/extract.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    out(f"$ {command}")
    out("")
    out(f"machine: {_machine()}")
    source = renderer
    if renderer == "fluidsynth" and not args.audio_dir:
        sf2 = find_soundfont()
        source += f" ({sf2.name})" if sf2 else ""
    styles = sorted({c.style for c in clips})
    codec = f"{'AAC .m4a' if args.format == 'm4a' else args.format} 128 kb/s, {NATIVE_SR} Hz"
    if args.audio_dir:
        out(f"clips: {len(clips)} × {CLIP_S:.0f} s excerpts (from {args.offset:.0f} s) of "
            f"the audio files in {args.audio_dir}, re-encoded {codec}: {', '.join(styles)}")
    else:
        out(f"clips: {len(clips)} × {CLIP_S:.0f} s, rendered by {source}, encoded {codec} "
            f"stereo; {len(styles)} styles ({', '.join(styles)}), "
            f"{len({c.key for c in clips})} keys, "
            f"{min(c.tempo_bpm for c in clips):.0f}–{max(c.tempo_bpm for c in clips):.0f} "
            f"BPM, {sum(c.drums for c in clips)} with drums")
    out("timing: time.process_time() per clip (CPU s) after one untimed warm-up clip per "
        "method; decode included in every method")
    out("")

    summary: dict[str, dict] = {}
    for name, _label in METHODS:
        cpu = np.array([r.cpu_s for r in runs[name]])
        wall = np.array([r.wall_s for r in runs[name]])
        summary[name] = {"cpu_s_per_clip": float(cpu.mean()), "cpu_s_median": float(np.median(cpu)),
                         "wall_s_per_clip": float(wall.mean()),
                         "clips_per_s_per_core": float(1.0 / cpu.mean())}
    ours_cpu = summary["previewvec"]["cpu_s_per_clip"]
    out("| method | CPU s / clip (mean) | CPU s / clip (median) | wall s / clip | "
        "clips / s / core | previewvec speed-up |")
    out("|---|---:|---:|---:|---:|---:|")
    for name, label in METHODS:
        s = summary[name]
        speedup = s["cpu_s_per_clip"] / ours_cpu
        s["previewvec_speedup"] = float(speedup)
        cell = "—" if name == "previewvec" else f"{speedup:.2f}×"
        out(f"| {label} | {s['cpu_s_per_clip']:.3f} | {s['cpu_s_median']:.3f} | "
            f"{s['wall_s_per_clip']:.3f} | {s['clips_per_s_per_core']:.2f} | {cell} |")
    out("")
    ours = np.array([r.cpu_s for r in runs["previewvec"]])
    for name in ("fma_native", "fma_22k"):
        sp = summary[name]["previewvec_speedup"]
        low, high = bootstrap_speedup(np.array([r.cpu_s for r in runs[name]]), ours)
        summary[name]["previewvec_speedup_ci95"] = [low, high]
        verdict = "meets" if sp >= TARGET_SPEEDUP else "BELOW"
        out(f"- speed-up over {dict(METHODS)[name]}: {sp:.3f}× (95 % CI over the clips "
            f"{low:.2f}–{high:.2f}×; {verdict} the ≥ {TARGET_SPEEDUP:.0f}× target)")
    out("")

    out(f"Agreement of previewvec's FMA block with the reference ({FMA_DIM} dims; Pearson r "
        f"per dimension across the {len(clips)} clips; dims constant across clips skipped):")
    out("")
    out("| previewvec vs | median r | 10th pct r | dims r ≥ 0.99 | correlated dims | "
        "constant in both | constant in one only | dims within 1 % (median over clips) | "
        "values within 1 % (median clip) | values within 2 % (median clip) |")
    out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("fma_native", "fma_22k"):
        a = agree[name]
        out(f"| {dict(METHODS)[name]} | {_fmt_r(a['median_r'])} | {_fmt_r(a['p10_r'])} | "
            f"{a['n_r_ge_099']} | {a['n_correlated']} | {a['n_constant_both']} | "
            f"{a['n_constant_one']} | {a['dims_within_1pct']:.1%} | "
            f"{a['within_1pct_median_clip']:.1%} | {a['within_2pct_median_clip']:.1%} |")
    out("")
    for name in ("fma_native", "fma_22k"):
        a = agree[name]
        verdict = "meets" if a["median_r"] >= TARGET_MEDIAN_R else "BELOW"
        lowest = ", ".join(f"{n} {r:.3f}" for n, r in a["lowest"])
        out(f"- vs {dict(METHODS)[name]}: median r {a['median_r']:.4f} ({verdict} the "
            f"≥ {TARGET_MEDIAN_R} target); lowest: {lowest}")
        if name == "fma_native":
            verdict = "meets" if a["dims_within_1pct"] >= TARGET_WITHIN_1 else "BELOW"
            out(f"  dimensions within 1 %: {a['dims_within_1pct']:.1%} ({verdict} the "
                f"≥ {TARGET_WITHIN_1:.0%} target)")
        if a["constant_one_names"]:
            out(f"  constant in only one of the two: {', '.join(a['constant_one_names'])}")
    out("")
    out("| family | dims | median r vs 22.05 kHz | min r vs 22.05 kHz | "
        "median r vs native | min r vs native |")
    out("|---|---:|---:|---:|---:|---:|")
    for family in FMA_FEATURE_SIZES:
        a22, anat = agree["fma_22k"]["by_family"][family], agree["fma_native"]["by_family"][family]
        out(f"| {family} | {a22['dims']} | {_fmt_r(a22['median_r'])} | {_fmt_r(a22['min_r'])} | "
            f"{_fmt_r(anat['median_r'])} | {_fmt_r(anat['min_r'])} |")
    out("")

    stages: dict[str, float] = {}
    for run in runs["previewvec"]:
        for key, value in run.timings_s.items():
            stages[key] = stages.get(key, 0.0) + value / len(runs["previewvec"])
    total = summary["previewvec"]["wall_s_per_clip"]
    stages["other (hashing, Python overhead)"] = max(total - sum(stages.values()), 0.0)
    out("Where previewvec spends its time (wall, mean per clip; `extract.spectra` is the "
        "one STFT and its tuning estimate, `extract.fma` the mel spectrogram, the CQT and "
        "the 518 statistics, `extract.rhythm` includes danceability):")
    out("")
    out("| stage | ms / clip | share |")
    out("|---|---:|---:|")
    for key, value in stages.items():
        out(f"| {key} | {1000 * value:.1f} | {value / total:.0%} |")
    out(f"| total | {1000 * total:.1f} | 100% |")
    ref_stages = {}
    for name in ("fma_native", "fma_22k"):
        n = len(runs[name])
        ref_stages[name] = {k: sum(r.timings_s[k] for r in runs[name]) / n
                            for k in ("decode", "features")}
    out("")
    out("Reference split (wall, mean per clip): " + "; ".join(
        f"{dict(METHODS)[n]}: decode {1000 * v['decode']:.0f} ms, features "
        f"{1000 * v['features']:.0f} ms" for n, v in ref_stages.items()))
    out("")

    if cold:
        out(f"Cold start: a fresh `python` process with the persisted numba cache "
            f"(NUMBA_CACHE_DIR={_NUMBA_CACHE_DIR}); wall seconds:")
        out("")
        out("| process | interpreter + imports → ready | imports | warm-up | first clip | "
            "second clip |")
        out("|---|---:|---:|---:|---:|---:|")
        for label, c in cold.items():
            warm = "—" if c["warm_up"] == "none" else f"{c['warm_s']:.2f}"
            out(f"| {label} | {c['start_to_ready_s']:.2f} | {c['import_s']:.2f} | {warm} | "
                f"{c['first_clip_s']:.2f} | {c['second_clip_s']:.2f} |")
        warmed = cold.get("with warm-up")
        if warmed:
            verdict = "meets" if warmed["first_clip_s"] <= TARGET_FIRST_CLIP_S else "MISSES"
            out("")
            out(f"- warm-up = {warmed['warm_up']}; first clip after warm-up "
                f"{warmed['first_clip_s']:.2f} s ({verdict} the ≤ {TARGET_FIRST_CLIP_S:.0f} s "
                f"target)")
        out("")
    print("\n".join(lines), flush=True)
    return {
        "command": command,
        "machine": _machine(),
        "renderer": renderer,
        "format": args.format,
        "clips": [{"index": c.index, "style": c.style, "key": c.key, "tempo_bpm": c.tempo_bpm,
                   "drums": c.drums, "bytes": len(c.data), "duration_s": c.duration_s}
                  for c in clips],
        "summary": summary,
        "per_clip_cpu_s": {n: [r.cpu_s for r in runs[n]] for n in runs},
        "agreement": agree,
        "previewvec_stages_s": stages,
        "reference_stages_s": ref_stages,
        "cold_start": cold,
        "table": "\n".join(lines),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24, help="number of 30 s clips (24)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--format", choices=("m4a", "mp3"), default="m4a")
    parser.add_argument("--renderer", choices=("auto", "fluidsynth", "synth"), default="auto")
    parser.add_argument("--audio-dir", type=Path,
                        help="real music: 30 s excerpts of the audio files in this folder")
    parser.add_argument("--offset", type=float, default=30.0,
                        help="where the excerpts start, in seconds (30)")
    parser.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process runs")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    args = parser.parse_args(argv)
    if args.clips < 3:
        parser.error("--clips must be at least 3 (correlations across clips)")

    started = time.perf_counter()
    if args.audio_dir:
        renderer = "real music"
        clips = real_clips(args.audio_dir, args.clips, args.offset, args.format)
        if len(clips) < 3:
            parser.error(f"{args.audio_dir}: fewer than 3 audio files of 30 s or more")
    else:
        renderer = resolve_renderer(args.renderer)
        print(f"rendering {args.clips} clips with {renderer} "
              f"({'fluidsynth found' if renderer == 'fluidsynth' else 'built-in numpy synth'})"
              " …", file=sys.stderr, flush=True)
        clips = make_clips(args.clips, args.seed, args.format, renderer)
    print(f"  {time.perf_counter() - started:.0f} s; measuring …", file=sys.stderr, flush=True)
    runs = measure(clips)
    ours = np.array([r.fma for r in runs["previewvec"]])
    agree = {name: agreement(ours, np.array([r.fma for r in runs[name]]))
             for name in ("fma_native", "fma_22k")}
    cold: dict[str, dict] = {}
    if not args.no_cold_start:
        print("  cold-start processes …", file=sys.stderr, flush=True)
        cold["with warm-up"] = cold_start(clips[0], warm=True, numba_cache_dir=_NUMBA_CACHE_DIR)
        cold["without warm-up"] = cold_start(clips[0], warm=False,
                                             numba_cache_dir=_NUMBA_CACHE_DIR)
    print(f"  total {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    result = report(args, clips, renderer, runs, agree, cold)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
