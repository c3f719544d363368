"""Sets of rendered songs with known tempo and key: evaluation sets, demo songs, benchmarks.

``build_set`` writes ``song-000.<fmt>``, ``song-001.<fmt>``, ... and a ``truth.jsonl`` with
one record per file. Files whose truth record is unchanged are reused, so rebuilding a set
that already exists costs only the (cheap) score generation.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testkit.songs.render import render, resolve_renderer
from testkit.songs.score import (
    MODES,
    STYLES,
    generate_song,
    key_name,
    style_weight,
    styles_for,
)

# Bump when generated songs or their rendering change: cached files are then rebuilt.
GENERATOR_VERSION = 1
TRUTH_FILE = "truth.jsonl"
EVAL_TEMPO_RANGE = (70.0, 180.0)


@dataclass(frozen=True)
class SongSpec:
    """What to generate: seed, key, quarter-note tempo, drum kit or not, style (None: auto)."""

    seed: int
    tonic: int
    mode: str
    tempo_bpm: float
    drums: bool
    style: str | None = None

    @property
    def key_name(self) -> str:
        return key_name(self.tonic, self.mode)


def eval_specs(n: int, seed: int = 0) -> list[SongSpec]:
    """``n`` specs for accuracy tests: all 24 keys equally often (as far as ``n`` allows),
    tempos stratified log-uniformly over 70-180 BPM, half with drums, styles balanced."""
    if n <= 0:
        return []
    rng = random.Random(f"previewvec-eval:{seed}")
    all_keys = [(t, m) for m in MODES for t in range(12)]
    keys: list[tuple[int, str]] = []
    while len(keys) < n:
        block = list(all_keys)
        rng.shuffle(block)
        keys.extend(block)
    keys = keys[:n]
    lo, hi = (math.log(x) for x in EVAL_TEMPO_RANGE)
    tempos = [round(math.exp(lo + (i + rng.random()) / n * (hi - lo)), 1) for i in range(n)]
    rng.shuffle(tempos)
    drums = [i % 2 == 0 for i in range(n)]
    rng.shuffle(drums)
    used = {(s, d): 0 for s in STYLES for d in (True, False)}
    specs = []
    for (tonic, mode), tempo, with_drums in zip(keys, tempos, drums, strict=True):
        # The least-used style that suits this tempo (weighted by how natural it is with or
        # without a drum kit) keeps every style represented.
        cands = [s for s in styles_for(tempo) if style_weight(s, with_drums) >= 0.5]
        cands = cands or list(styles_for(tempo)) or ["pop"]
        w = {s: style_weight(s, with_drums) for s in cands}
        style = min(cands, key=lambda s: (used[s, with_drums] / w[s], rng.random()))
        used[style, with_drums] += 1
        specs.append(SongSpec(rng.randrange(2**31), tonic, mode, tempo, with_drums, style))
    return specs


def demo_specs() -> list[SongSpec]:
    """Eight varied songs for ``previewvec demo``."""
    return [
        SongSpec(101, 9, "minor", 96.0, True, "pop"),
        SongSpec(102, 6, "major", 124.0, True, "dance"),
        SongSpec(103, 3, "major", 72.0, False, "ballad"),
        SongSpec(104, 4, "minor", 168.0, True, "rock"),
        SongSpec(105, 2, "minor", 150.0, True, "jazz"),
        SongSpec(106, 7, "major", 132.0, False, "waltz"),
        SongSpec(107, 0, "minor", 104.0, True, "funk"),
        SongSpec(108, 10, "major", 116.0, False, "chamber"),
    ]


def _truth_record(
    spec: SongSpec, index: int, fmt: str, renderer: str, sr: int, duration_s: float,
) -> dict[str, Any]:
    score = generate_song(spec.seed, tonic=spec.tonic, mode=spec.mode, tempo_bpm=spec.tempo_bpm,
                          drums=spec.drums, duration_s=duration_s, style=spec.style)
    return {
        "file": f"song-{index:03d}.{fmt}",
        "seed": spec.seed,
        "tempo_bpm": score.tempo_bpm,
        "tonic": score.tonic,
        "mode": score.mode,
        "key": score.key_name,
        "drums": score.has_drums,
        "style": score.style,
        "renderer": renderer,
        "beats_per_bar": score.beats_per_bar,
        "swing": round(score.swing, 4),
        "duration_s": duration_s,
        "sr": sr,
        "generator": GENERATOR_VERSION,
    }


def _encode(audio: np.ndarray, sr: int, fmt: str) -> bytes:
    try:
        from testkit.encode import encode_audio
    except ImportError:
        if fmt not in ("wav", "flac"):
            raise
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, audio.T, sr, format=fmt.upper(), subtype="PCM_16")
        return buf.getvalue()
    return encode_audio(audio, sr, fmt)


def _build_one(spec: SongSpec, path: str, fmt: str, renderer: str, sr: int,
               duration_s: float) -> None:
    score = generate_song(spec.seed, tonic=spec.tonic, mode=spec.mode, tempo_bpm=spec.tempo_bpm,
                          drums=spec.drums, duration_s=duration_s, style=spec.style)
    data = _encode(render(score, sr=sr, renderer=renderer), sr, fmt)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load_truth(out_dir: Path) -> list[dict[str, Any]]:
    """The records of ``out_dir/truth.jsonl`` (empty if there is none)."""
    path = Path(out_dir) / TRUTH_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_set(
    specs: list[SongSpec], out_dir: Path, *, fmt: str = "m4a", renderer: str = "auto",
    sr: int = 44100, duration_s: float = 30.0, workers: int = 1,
) -> list[dict[str, Any]]:
    """Render and encode ``specs`` into ``out_dir``; return (and write) the truth records.

    Files already present with an identical truth record are reused.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    concrete = resolve_renderer(renderer)
    previous = {r.get("file"): r for r in load_truth(out_dir)}
    records = [_truth_record(s, i, fmt, concrete, sr, duration_s) for i, s in enumerate(specs)]
    todo = []
    for spec, record in zip(specs, records, strict=True):
        path = out_dir / record["file"]
        if previous.get(record["file"]) == record and path.is_file() and path.stat().st_size:
            continue
        todo.append((spec, str(path), fmt, concrete, sr, duration_s))
    if workers > 1 and len(todo) > 1:
        # Threads suffice: fluidsynth runs as a subprocess and numpy/encoders release the GIL.
        with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            for future in [pool.submit(_build_one, *job) for job in todo]:
                future.result()
    else:
        for job in todo:
            _build_one(*job)
    # Keep records of other files (e.g. from a larger set built earlier) out: the truth file
    # describes exactly this set.
    tmp = out_dir / f"{TRUTH_FILE}.tmp-{os.getpid()}"
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    os.replace(tmp, out_dir / TRUTH_FILE)
    return records


def write_demo_set(out_dir: Path, formats: Sequence[str],
                   renderer: str = "auto") -> list[tuple[str, dict[str, Any]]]:
    """The demo's songs (:func:`demo_specs`) spread over ``formats``, one folder per format
    under ``out_dir``; returns (path relative to ``out_dir``, truth record) per song."""
    files: list[tuple[str, dict[str, Any]]] = []
    specs = demo_specs()
    for i, fmt in enumerate(formats):
        subset = specs[i :: len(formats)]
        if subset:
            rows = build_set(subset, Path(out_dir) / fmt, fmt=fmt, renderer=renderer)
            files.extend((f"{fmt}/{row['file']}", row) for row in rows)
    return files
