"""Tempo and key accuracy on rendered songs: previewvec versus naive librosa.

Renders songs with known tempo and key (generated MIDI, fluidsynth + a General MIDI
soundfont when installed), encodes them as .m4a, and prints a table of tempo accuracy
(within 4 %, and up to octave errors) and the MIREX weighted key score.

    python benchmarks/accuracy.py --songs 96 --seed 1000

``--wide`` uses the wide set instead (``testkit.songs.wide_specs``: four SoundFonts, 3/4,
6/8, 12/8, swing, syncopation, 55-200 BPM, pads and drones, modal scales, key changes,
mastering variations, mid-bar starts) and prints the figures per category as well;
``--wide heldout`` the held-out part (``heldout_specs``: evaluate on it, never tune)::

    nice -n 19 python benchmarks/accuracy.py --wide tuning --songs 64 --out .cache-pv/wide
    nice -n 19 python benchmarks/accuracy.py --wide heldout --songs 64 --out .cache-pv/heldout

Tempo truth is the beat pulse (``tempo_bpm``): the quarter note in 4/4 and 3/4, the dotted
quarter in 6/8 and 12/8. "± octave" accepts ×½, ×2, ×⅓ and ×3 of it (so the eighth-note
rate of a compound metre counts, its quarter-note rate, ×1.5, does not). Key truth is the
key of the larger part of the clip, major or minor by the tonic triad (D dorian is
D minor); the MIREX score compares it with the estimate.

``--lead-in S`` also analyses every song after S seconds of digital silence (cut back to
its length and re-encoded, as a render from the song's start or a track's first seconds
is), twice: as previewvec does (the lead-in left out of the tempo analysis, pv6) and with
the lead-in kept as pv5 did, both in the same run. ``--silent-tail S`` does the same with
the song's last S seconds silenced (a song that ends inside the clip)::

    python benchmarks/accuracy.py --songs 96 --seed 1000 --no-naive --lead-in 1
    python benchmarks/accuracy.py --songs 96 --seed 1000 --no-naive --silent-tail 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np

from contract.layout import PITCH_CLASSES
from contract.settings import Settings
from testkit.encode import encode_audio
from testkit.mirex import key_score, tempo_correct, tempo_correct_any_octave
from testkit.songs.dataset import (
    HELDOUT_SEEDS,
    WIDE_TUNING_SEED,
    build_set,
    eval_specs,
    heldout_specs,
    wide_specs,
)
from workers.analysis import analyze
from workers.audio import decode_audio
from workers.features import rhythm
from workers.features.tonal import _PROFILES

SR = 22050


def naive_tempo(y: np.ndarray) -> float:
    """librosa.beat.beat_track with defaults."""
    tempo, _ = librosa.beat.beat_track(y=y, sr=SR)
    return float(np.atleast_1d(tempo)[0])


def naive_key(y: np.ndarray) -> tuple[int, str]:
    """Krumhansl-Kessler profiles correlated with the mean chroma_cqt."""
    chroma = librosa.feature.chroma_cqt(y=y, sr=SR).mean(axis=1)
    major, minor = (np.asarray(p) for p in _PROFILES["krumhansl"])
    best, best_r = (0, "major"), -2.0
    for mode, profile in (("major", major), ("minor", minor)):
        for tonic in range(12):
            r = np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]
            if r > best_r:
                best, best_r = (tonic, mode), r
    return best


def _estimates(source: str | bytes, settings: Settings, prefix: str) -> dict:
    d = analyze(source, settings).features.descriptors
    return {f"{prefix}_tempo": float(d["tempo_bpm"]),
            f"{prefix}_tonic": PITCH_CLASSES.index(str(d["key"])),
            f"{prefix}_mode": d["mode"]}


def with_silence(path: Path, lead_in_s: float = 0.0, tail_s: float = 0.0) -> bytes:
    """The clip at ``path`` after ``lead_in_s`` of digital silence, cut back to its length,
    its last ``tail_s`` silenced, re-encoded as .m4a."""
    audio = decode_audio(str(path), sr=None, max_duration_s=600)
    x = audio.channels if audio.channels is not None else audio.samples[np.newaxis]
    silence = np.zeros((x.shape[0], round(lead_in_s * audio.sr)), np.float32)
    y = np.concatenate([silence, x], axis=1)[:, : x.shape[1]]
    if tail_s > 0:
        y[:, y.shape[1] - round(tail_s * audio.sr):] = 0.0
    return encode_audio(y, audio.sr, "m4a")


def _both_ways(data: bytes, settings: Settings, prefix: str) -> dict:
    """Estimates as previewvec makes them, and with every frame analysed (pv5: no lead-in
    or silent tail left out), under ``prefix`` and ``prefix + "kept"``."""
    out = _estimates(data, settings, prefix)
    kept, rhythm.LEAD_IN_SILENCE_DB = rhythm.LEAD_IN_SILENCE_DB, float("inf")
    try:  # every frame counts as sounding
        out.update(_estimates(data, settings, f"{prefix}kept"))
    finally:
        rhythm.LEAD_IN_SILENCE_DB = kept
    return out


def evaluate(rows: list[dict], out_dir: Path, *, naive: bool,
             lead_in_s: float = 0.0, tail_s: float = 0.0) -> list[dict]:
    settings = Settings()
    results = []
    for row in rows:
        path = out_dir / row["file"]
        result = {**row, **_estimates(str(path), settings, "est")}
        if lead_in_s > 0:
            result.update(_both_ways(with_silence(path, lead_in_s=lead_in_s), settings, "lead"))
        if tail_s > 0:
            result.update(_both_ways(with_silence(path, tail_s=tail_s), settings, "tail"))
        if naive:
            y = decode_audio(str(path)).samples
            result["naive_tempo"] = naive_tempo(y)
            result["naive_tonic"], result["naive_mode"] = naive_key(y)
        results.append(result)
    return results


def summarize(results: list[dict], prefix: str) -> dict[str, float]:
    def share(items: list[dict], ok) -> float:
        return float(np.mean([ok(r) for r in items])) if items else float("nan")

    drums = [r for r in results if r["drums"]]
    return {
        "tempo_all": share(results, lambda r: tempo_correct(r["tempo_bpm"], r[f"{prefix}_tempo"])),
        "tempo_drums": share(drums, lambda r: tempo_correct(r["tempo_bpm"], r[f"{prefix}_tempo"])),
        "tempo_octave": share(
            results, lambda r: tempo_correct_any_octave(r["tempo_bpm"], r[f"{prefix}_tempo"])
        ),
        "key_mirex": float(
            np.mean(
                [
                    key_score(r["tonic"], r["mode"], r[f"{prefix}_tonic"], r[f"{prefix}_mode"])
                    for r in results
                ]
            )
        ),
    }


def _tempo_band(bpm: float) -> str:
    for hi, label in ((80, "55-80"), (120, "80-120"), (160, "120-160")):
        if bpm < hi:
            return label
    return "160-200"


def categories(r: dict) -> dict[str, str]:
    """The categories a wide-set song belongs to, one label per aspect."""
    level = "quiet" if r["gain_db"] < 0 else "loud" if r["gain_db"] > 0 else "nominal"
    room = ("reverb+noise" if r["reverb"] and r["noise_snr_db"] is not None
            else "reverb" if r["reverb"] else "noise" if r["noise_snr_db"] is not None
            else "dry")
    return {
        "meter": r["meter"],
        "drums": "drums" if r["drums"] else "no drums",
        "texture": r["texture"],
        "tempo band": _tempo_band(r["tempo_bpm"]),
        "soundfont": r["soundfont"],
        "scale": r["scale"],
        "feel": r["feel"],
        "key change": r["key_change"],
        "level": level,
        "room": room,
        "start": "mid-bar" if r["start_offset_s"] else "downbeat",
    }


# Semitones from a mode's tonic down to its parent major scale's tonic (D dorian: C major).
_PARENT_MAJOR = {"dorian": 2, "phrygian": 4, "lydian": 5, "mixolydian": 7}


def parent_key_score(r: dict, prefix: str) -> float:
    """MIREX score of the estimate against the modal song's parent major key (the key whose
    scale it uses), the reading a pitch-class profile tends to give; the truth stays the
    tonic-centred key (docs/features.md)."""
    parent = (r["tonic"] - _PARENT_MAJOR[r["scale"]]) % 12
    return key_score(parent, "major", r[f"{prefix}_tonic"], r[f"{prefix}_mode"])


def miss_ratios(results: list[dict], prefix: str) -> dict[str, int]:
    """Tempo misses (outside 4 %) counted by the nearest simple ratio to the truth."""
    ratios = {"×2": 2.0, "×½": 0.5, "×3": 3.0, "×⅓": 1 / 3, "×3/2": 1.5, "×2/3": 2 / 3}
    counts = dict.fromkeys([*ratios, "other"], 0)
    for r in results:
        est, true = r[f"{prefix}_tempo"], r["tempo_bpm"]
        if tempo_correct(true, est):
            continue
        name = next((k for k, f in ratios.items() if tempo_correct(true * f, est)), "other")
        counts[name] += 1
    return {k: v for k, v in counts.items() if v}


def print_breakdown(results: list[dict], methods: list[tuple[str, str]]) -> None:
    """Per category: songs, then tempo ±4 %, ± octave and MIREX key for each method."""
    head = "".join(f"{label + ' t4%':>15}{'oct':>6}{'key':>6}" for label, _ in methods)
    print(f"\n{'category':<24}{'n':>4}{head}")
    aspects: dict[str, dict[str, list[dict]]] = {}
    for r in results:
        for aspect, label in categories(r).items():
            aspects.setdefault(aspect, {}).setdefault(label, []).append(r)
    for aspect, groups in aspects.items():
        for label in sorted(groups):
            items = groups[label]
            cells = ""
            for _, prefix in methods:
                s = summarize(items, prefix)
                cells += f"{s['tempo_all']:>15.2f}{s['tempo_octave']:>6.2f}{s['key_mirex']:>6.2f}"
            print(f"{aspect + ': ' + label:<24}{len(items):>4}{cells}")
    for label, prefix in methods:
        print(f"{label} tempo misses by ratio (estimate / truth): "
              + ", ".join(f"{k} {v}" for k, v in miss_ratios(results, prefix).items()))
    modal = [r for r in results if r["scale"] in _PARENT_MAJOR]
    if modal:
        scores = ", ".join(
            f"{label} {np.mean([parent_key_score(r, prefix) for r in modal]):.2f}"
            for label, prefix in methods)
        print(f"\nmodal songs ({len(modal)}), MIREX key against the parent major key "
              f"instead: {scores}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=48)
    parser.add_argument("--seed", type=int, default=None,
                        help=f"set seed (default 1000; --wide tuning: {WIDE_TUNING_SEED})")
    parser.add_argument("--renderer", default="auto")
    parser.add_argument("--out", default=None, help="song cache folder (default: temp)")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--dump", default=None, help="write per-song results as JSON Lines")
    parser.add_argument("--wide", choices=("tuning", "heldout"), default=None,
                        help="the wide set (seed --seed, default 17) or its held-out part")
    parser.add_argument("--workers", type=int, default=1, help="render threads")
    parser.add_argument("--lead-in", type=float, default=0.0, metavar="S",
                        help="also analyse each song after S s of digital silence")
    parser.add_argument("--silent-tail", type=float, default=0.0, metavar="S",
                        help="also analyse each song with its last S s silenced")
    args = parser.parse_args(argv)

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="pv-accuracy-"))
    if args.wide == "heldout":
        if args.seed is not None:
            parser.error("the held-out set has fixed seeds (HELDOUT_SEEDS)")
        specs = heldout_specs(args.songs)
    elif args.wide == "tuning":
        args.seed = WIDE_TUNING_SEED if args.seed is None else args.seed
        specs = wide_specs(args.songs, seed=args.seed)
    else:
        args.seed = 1000 if args.seed is None else args.seed
        specs = eval_specs(args.songs, seed=args.seed)
    rows = build_set(specs, out_dir, renderer=args.renderer, workers=args.workers)
    results = evaluate(rows, out_dir, naive=not args.no_naive, lead_in_s=args.lead_in,
                       tail_s=args.silent_tail)
    if args.dump:
        Path(args.dump).write_text("".join(json.dumps(r) + "\n" for r in results))
    n_drums = sum(r["drums"] for r in results)
    print(
        f"{len(results)} songs ({n_drums} with drums), renderer={rows[0].get('renderer')}, "
        f"set={args.wide or 'eval'}, "
        f"seed={HELDOUT_SEEDS[0] if args.wide == 'heldout' else args.seed}"
    )
    print(
        f"{'method':<12}{'tempo ±4% (drums)':>20}{'tempo ±4% (all)':>18}"
        f"{'± octave (all)':>16}{'MIREX key':>12}"
    )
    methods = [("previewvec", "est")] + ([] if args.no_naive else [("naive", "naive")])
    if args.lead_in > 0:
        methods += [(f"+{args.lead_in:g}s lead", "lead"), ("lead kept", "leadkept")]
    if args.silent_tail > 0:
        methods += [(f"-{args.silent_tail:g}s tail", "tail"), ("tail kept", "tailkept")]
    for label, prefix in methods:
        s = summarize(results, prefix)
        print(
            f"{label:<12}{s['tempo_drums']:>20.3f}{s['tempo_all']:>18.3f}"
            f"{s['tempo_octave']:>16.3f}{s['key_mirex']:>12.3f}"
        )
    if args.wide:
        print_breakdown(results, methods)
    return 0


if __name__ == "__main__":
    sys.exit(main())
