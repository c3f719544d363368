"""Tempo and key accuracy on rendered songs: previewvec versus naive librosa.

Renders songs with known tempo and key (generated MIDI, fluidsynth + a General MIDI
soundfont when installed), encodes them as .m4a, and prints a table of tempo accuracy
(within 4 %, and up to octave errors) and the MIREX weighted key score.

    python benchmarks/accuracy.py --songs 96 --seed 1000
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
from testkit.mirex import key_score, tempo_correct, tempo_correct_any_octave
from testkit.songs.dataset import build_set, eval_specs
from workers.analysis import analyze
from workers.audio import decode_audio
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


def evaluate(rows: list[dict], out_dir: Path, *, naive: bool) -> list[dict]:
    settings = Settings()
    results = []
    for row in rows:
        path = out_dir / row["file"]
        analysis = analyze(str(path), settings)
        d = analysis.features.descriptors
        tonic = PITCH_CLASSES.index(str(d["key"]))
        result = {
            **row,
            "est_tempo": float(d["tempo_bpm"]),
            "est_tonic": tonic,
            "est_mode": d["mode"],
        }
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--renderer", default="auto")
    parser.add_argument("--out", default=None, help="song cache folder (default: temp)")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--dump", default=None, help="write per-song results as JSON Lines")
    args = parser.parse_args(argv)

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="pv-accuracy-"))
    rows = build_set(eval_specs(args.songs, seed=args.seed), out_dir, renderer=args.renderer)
    results = evaluate(rows, out_dir, naive=not args.no_naive)
    if args.dump:
        Path(args.dump).write_text("".join(json.dumps(r) + "\n" for r in results))
    n_drums = sum(r["drums"] for r in results)
    print(
        f"{len(results)} songs ({n_drums} with drums), renderer={rows[0].get('renderer')}, "
        f"seed={args.seed}"
    )
    print(
        f"{'method':<12}{'tempo ±4% (drums)':>20}{'tempo ±4% (all)':>18}"
        f"{'± octave (all)':>16}{'MIREX key':>12}"
    )
    methods = [("previewvec", "est")] + ([] if args.no_naive else [("naive", "naive")])
    for label, prefix in methods:
        s = summarize(results, prefix)
        print(
            f"{label:<12}{s['tempo_drums']:>20.3f}{s['tempo_all']:>18.3f}"
            f"{s['tempo_octave']:>16.3f}{s['key_mirex']:>12.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
