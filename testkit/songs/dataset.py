"""Sets of rendered songs with known tempo and key: evaluation sets, demo songs, benchmarks.

``build_set`` writes ``song-000.<fmt>``, ``song-001.<fmt>``, ... and a ``truth.jsonl`` with
one record per file. Files whose truth record is unchanged are reused, so rebuilding a set
that already exists costs only the (cheap) score generation.

Two families of sets:

* :func:`eval_specs`: the project's long-standing songs (FluidR3, 70-180 BPM, the styles'
  own metres and feels, major and harmonic-minor keys, one key, clean masters).
* :func:`wide_specs`: the wide set (issue 17): four SoundFonts, 3/4, 6/8 and 12/8, swing
  and syncopation, 55-200 BPM, pads and drones without drums, natural minor and modal
  scales, key changes near the clip's edges, quieter and louder masters, reverb, noise, and
  clips that start mid-bar. :func:`heldout_specs` is the part of it reserved for
  held-out evaluation (:data:`HELDOUT_SEEDS`): never tune anything on it.
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

from testkit.songs.render import SOUNDFONTS, master, render, resolve_renderer
from testkit.songs.score import (
    MODES,
    STYLES,
    Score,
    generate_song,
    key_name,
    modulate,
    style_weight,
    styles_for,
)

# Bump when generated songs or their rendering change: cached files are then rebuilt.
GENERATOR_VERSION = 1
TRUTH_FILE = "truth.jsonl"
EVAL_TEMPO_RANGE = (70.0, 180.0)
WIDE_TEMPO_RANGE = (55.0, 200.0)  # the beat pulse of simple metres (4/4, 3/4)
WIDE_COMPOUND_TEMPO_RANGE = (55.0, 140.0)  # the dotted-quarter pulse of 6/8 and 12/8
# Seeds of wide_specs reserved for held-out evaluation. Never tune on sets built from them:
# measure on them only after choosing a method on wide_specs(n, seed) with other seeds.
HELDOUT_SEEDS: tuple[int, ...] = (917_301, 917_302)
WIDE_TUNING_SEED = 17


@dataclass(frozen=True)
class Variation:
    """How a wide-set song departs from the plain ones (see :func:`wide_specs`).

    ``key_change``: ``"early"`` moves to another key at the first bar line after 2-6 s
    into the clip (the clip's key is then the new one), ``"late"`` at the last bar line
    before 24-28 s (the clip's key stays the first); the truth is always the key of the
    larger part of the clip, and the record's ``key_change_s`` the actual time.
    ``start_offset_s``: the clip starts that far into the song, mostly not on a bar line.
    The mix settings are those of :func:`~testkit.songs.render.master`.
    """

    soundfont: str = "fluidr3"
    meter: str = "4/4"
    feel: str = "straight"
    scale: str | None = None  # a MODAL_SCALES name; None: the mode's own scale
    texture: str = "band"
    key_change: str = "none"  # "none" | "early" | "late"
    key_change_semitones: int = 0
    key_change_at_s: float = 0.0  # wanted position in the clip (snapped to a bar line)
    gain_db: float = 0.0
    reverb: float = 0.0
    noise_snr_db: float | None = None
    start_offset_s: float = 0.0


@dataclass(frozen=True)
class SongSpec:
    """What to generate: seed, key, tempo (the beat pulse), drum kit or not, style (None:
    auto), and for the wide set a :class:`Variation`."""

    seed: int
    tonic: int
    mode: str
    tempo_bpm: float
    drums: bool
    style: str | None = None
    wide: Variation | None = None

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


def _balanced(rng: random.Random, items: Sequence[Any], n: int) -> list[Any]:
    """``n`` picks cycling through shuffled copies of ``items`` (each equally often)."""
    out: list[Any] = []
    while len(out) < n:
        block = list(items)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def _stratified_tempos(rng: random.Random, n: int, lo_hi: tuple[float, float]) -> list[float]:
    lo, hi = (math.log(x) for x in lo_hi)
    tempos = [round(math.exp(lo + (i + rng.random()) / n * (hi - lo)), 1) for i in range(n)]
    rng.shuffle(tempos)
    return tempos


# Scales in the wide set: (scale or None for the mode's own, weight) per mode.
_WIDE_SCALES: dict[str, tuple[tuple[str | None, float], ...]] = {
    "major": ((None, 0.6), ("mixolydian", 0.2), ("lydian", 0.2)),
    "minor": ((None, 0.35), ("aeolian", 0.3), ("dorian", 0.2), ("phrygian", 0.15)),
}


def wide_specs(n: int, seed: int = WIDE_TUNING_SEED) -> list[SongSpec]:
    """``n`` specs of the wide set: every SoundFont, drums/no drums and key equally often
    (as far as ``n`` allows), 4/4 twice as often as each other metre, tempos stratified
    log-uniformly, the rest drawn per song (seeded).

    Metres: 4/4, 3/4, 6/8 and 12/8 (compound tempos are dotted-quarter pulses over
    :data:`WIDE_COMPOUND_TEMPO_RANGE`). Without drums a song is a band without a kit, a pad
    or a drone. Seeds in :data:`HELDOUT_SEEDS` are reserved: use :func:`heldout_specs`.
    """
    if n <= 0:
        return []
    rng = random.Random(f"previewvec-wide:{seed}")
    keys = _balanced(rng, [(t, m) for m in MODES for t in range(12)], n)
    fonts = _balanced(rng, tuple(SOUNDFONTS), n)
    meters = _balanced(rng, ("4/4", "4/4", "3/4", "6/8", "12/8"), n)
    drums = _balanced(rng, (True, False), n)
    simple = iter(_stratified_tempos(rng, n, WIDE_TEMPO_RANGE))
    compound = iter(_stratified_tempos(rng, n, WIDE_COMPOUND_TEMPO_RANGE))
    specs = []
    for (tonic, mode), font, meter, with_drums in zip(keys, fonts, meters, drums, strict=True):
        tempo = next(compound) if meter in ("6/8", "12/8") else next(simple)
        feel = "straight"
        if meter == "4/4":
            feel = rng.choice(("straight", "swing", "sync"))
        elif meter == "3/4" and rng.random() < 0.3:
            feel = "swing"
        texture = "band" if with_drums else rng.choice(("band", "pad", "drone"))
        scales = _WIDE_SCALES[mode]
        scale = rng.choices([s for s, _ in scales], weights=[w for _, w in scales])[0]
        change = rng.choices(("none", "early", "late"), weights=(0.7, 0.15, 0.15))[0]
        semitones = rng.choice((-5, -3, -2, -1, 1, 2, 3, 5)) if change != "none" else 0
        change_at = (rng.uniform(2.0, 6.0) if change == "early"
                     else rng.uniform(24.0, 28.0) if change == "late" else 0.0)
        gain_db = rng.choice((-20.0, -10.0, 0.0, 0.0, 6.0))
        reverb = round(rng.uniform(0.2, 0.5), 2) if rng.random() < 0.35 else 0.0
        noise = round(rng.uniform(10.0, 30.0), 1) if rng.random() < 0.3 else None
        offset = round(rng.uniform(0.3, 4.0), 3) if rng.random() < 0.7 else 0.0
        cands = list(styles_for(tempo)) or ["pop", "rock", "jazz", "folk", "chamber"]
        style = rng.choice(cands)
        wide = Variation(font, meter, feel, scale, texture, change, semitones,
                         round(change_at, 3), gain_db, reverb, noise, offset)
        specs.append(SongSpec(rng.randrange(2**31), tonic, mode, tempo, with_drums, style,
                              wide))
    return specs


def heldout_specs(n: int, part: int = 0) -> list[SongSpec]:
    """The held-out part of the wide set: ``wide_specs(n, HELDOUT_SEEDS[part])``.

    For evaluation only: nothing (thresholds, weights, rules) may be chosen by looking at
    results on these songs, or they stop measuring how well a method generalises.
    """
    return wide_specs(n, seed=HELDOUT_SEEDS[part])


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


def _wide_score(spec: SongSpec, duration_s: float) -> Score:
    """The song of a wide spec: long enough for its start offset, key change applied."""
    w = spec.wide
    assert w is not None
    score = generate_song(
        spec.seed, tonic=spec.tonic, mode=spec.mode, tempo_bpm=spec.tempo_bpm,
        drums=spec.drums, duration_s=duration_s + w.start_offset_s, style=spec.style,
        meter=w.meter, feel=w.feel, scale=w.scale, texture=w.texture,
    )
    if w.key_change != "none":
        # Modulations happen on a bar line (a 6/8 bar is two beats): the next one after an
        # early change, the one before a late change, so that the change stays in its half.
        bar = 2 if w.meter == "6/8" else score.beats_per_bar
        beat = (w.start_offset_s + w.key_change_at_s) * spec.tempo_bpm / 60.0
        snap = math.ceil if w.key_change == "early" else math.floor
        score = modulate(score, max(bar, snap(beat / bar - 1e-9) * bar), w.key_change_semitones)
    return score


def _wide_fields(spec: SongSpec, score: Score, duration_s: float) -> dict[str, Any]:
    """Truth fields of a wide-set song; the key is the one of the larger part of the clip."""
    w = spec.wide
    assert w is not None
    fields: dict[str, Any] = {
        "meter": w.meter,
        "pulse": "dotted quarter" if w.meter in ("6/8", "12/8") else "quarter",
        "scale": w.scale or ("major" if spec.mode == "major" else "harmonic minor"),
        "feel": w.feel,
        "texture": w.texture,
        "soundfont": w.soundfont,
        "gain_db": w.gain_db,
        "reverb": w.reverb,
        "noise_snr_db": w.noise_snr_db,
        "start_offset_s": w.start_offset_s,
        "key_change": w.key_change,
        "key_change_s": None,
        "key_start": score.key_name,
    }
    tonic = score.tonic
    if score.key_change is not None:
        at_s = round(score.key_change[0] * 60.0 / score.tempo_bpm - w.start_offset_s, 3)
        moved = (score.tonic + score.key_change[1]) % 12
        fields["key_change_s"] = at_s
        fields["key_end"] = key_name(moved, score.mode)
        if at_s < duration_s / 2:
            tonic = moved
    fields.update(tonic=tonic, key=key_name(tonic, score.mode))
    return fields


def _score_of(spec: SongSpec, duration_s: float) -> Score:
    if spec.wide is not None:
        return _wide_score(spec, duration_s)
    return generate_song(spec.seed, tonic=spec.tonic, mode=spec.mode, tempo_bpm=spec.tempo_bpm,
                         drums=spec.drums, duration_s=duration_s, style=spec.style)


def _truth_record(
    spec: SongSpec, index: int, fmt: str, renderer: str, sr: int, duration_s: float,
) -> dict[str, Any]:
    score = _score_of(spec, duration_s)
    record = {
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
    if spec.wide is not None:
        record["duration_s"] = duration_s
        record.update(_wide_fields(spec, score, duration_s))
    return record


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


def render_spec(spec: SongSpec, *, sr: int = 44100, renderer: str = "auto",
                duration_s: float = 30.0) -> np.ndarray:
    """The clip of ``spec`` as float32 ``(2, round(duration_s * sr))``: rendered, and for a
    wide spec with its SoundFont, mastered (:func:`master`) and cut at its start offset."""
    score = _score_of(spec, duration_s)
    w = spec.wide
    if w is None:
        return render(score, sr=sr, renderer=renderer)
    audio = render(score, sr=sr, renderer=renderer, soundfont=w.soundfont)
    # The room and the noise act on the whole song, so the clip starts inside the reverb.
    audio = master(audio, sr, gain_db=w.gain_db, reverb=w.reverb, noise_snr_db=w.noise_snr_db,
                   seed=spec.seed)
    start = round(w.start_offset_s * sr)
    return audio[:, start:start + round(duration_s * sr)]


def _build_one(spec: SongSpec, path: str, fmt: str, renderer: str, sr: int,
               duration_s: float) -> None:
    data = _encode(render_spec(spec, sr=sr, renderer=renderer, duration_s=duration_s), sr, fmt)
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
