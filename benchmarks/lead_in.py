"""Tempo of real tracks analysed from their start, where most begin with a silent lead-in.

A user's file is decoded from its first sample (the first 30 s, as ``previewvec extract``
reads it). For each audio file of ``--audio-dir``: the lead-in the tempo analysis leaves
out (frames, and seconds), the tempo as previewvec reads it (pv6, which also leaves out a
silent tail), the tempo with every frame kept (pv5's computation, measured in the same
run), and, as a proxy with no
ground truth, the tempo of the same track's next 30 s (from 30 s in, no lead-in there):
a tempo that agrees with it is more likely the track's. Sections can change tempo, so
disagreement is not proof of an error.

    apt-get install wesnoth-1.16-music
    python benchmarks/lead_in.py --audio-dir /usr/share/games/wesnoth/1.16/data/core/music
"""

from __future__ import annotations

import sys

from _percore import pin_one_thread

pin_one_thread("benchmarks/lead_in.py")

import argparse  # noqa: E402
import shlex  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from contract.errors import PreviewvecError  # noqa: E402
from testkit.mirex import tempo_correct  # noqa: E402
from workers.audio import decode_audio  # noqa: E402
from workers.features import rhythm, spectral  # noqa: E402

CLIP_S = 30.0
AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav", ".m4a", ".opus")


def tempo_and_start(y: np.ndarray, sr: int) -> tuple[float, int, float]:
    """Tempo (BPM), frames left out as lead-in, and the analysis frame rate."""
    spectra = spectral.compute_spectra(y, sr)
    rate = spectra.analysis_sr
    envelope = rhythm.onset_envelope(spectra.analysis_mel_db, rate)
    beat = rhythm.analyze_rhythm(spectra.analysis_mel_db, envelope, rate, y.size / sr)
    return beat.tempo_bpm, rhythm.music_span(spectra.analysis_mel_db, rate)[0], rate / 512


def lead_kept_tempo(y: np.ndarray, sr: int) -> float:
    kept, rhythm.LEAD_IN_SILENCE_DB = rhythm.LEAD_IN_SILENCE_DB, float("inf")
    try:
        return tempo_and_start(y, sr)[0]
    finally:
        rhythm.LEAD_IN_SILENCE_DB = kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio-dir", required=True, type=Path)
    parser.add_argument("--files", type=int, default=0, help="at most this many (0: all)")
    args = parser.parse_args(argv)

    print(f"`python {shlex.join(['benchmarks/lead_in.py', *(argv or sys.argv[1:])])}`\n")
    print("| track | lead-in left out | tempo (pv6) | every frame kept (pv5) | next 30 s |")
    print("|---|---:|---:|---:|---:|")
    paths = sorted(p for p in args.audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    counts = {"files": 0, "lead_in": 0, "changed": 0, "with_next": 0, "pv6": 0, "pv5": 0}
    for path in paths[: args.files or None]:
        try:
            audio = decode_audio(str(path), sr=None, max_duration_s=2 * CLIP_S,
                                 max_input_bytes=500_000_000)
        except PreviewvecError as exc:
            print(f"  skipped {path.name}: {exc.code}", file=sys.stderr)
            continue
        cut = round(CLIP_S * audio.sr)
        head, tail = audio.samples[:cut], audio.samples[cut:]
        tempo, start, fps = tempo_and_start(head, audio.sr)
        kept = lead_kept_tempo(head, audio.sr)
        nxt = tempo_and_start(tail, audio.sr)[0] if tail.size >= cut * 2 // 3 else None
        counts["files"] += 1
        counts["lead_in"] += start > 0
        counts["changed"] += not tempo_correct(kept, tempo)
        if nxt is not None:
            counts["with_next"] += 1
            counts["pv6"] += tempo_correct(nxt, tempo)
            counts["pv5"] += tempo_correct(nxt, kept)
        lead = f"{start} ({start / fps:.2f} s)" if start else "-"
        nxt_text = f"{nxt:.1f}" if nxt is not None else "(shorter)"
        print(f"| {path.stem} | {lead} | {tempo:.1f} | {kept:.1f} | {nxt_text} |", flush=True)
    c = counts
    print(f"\n{c['files']} tracks, {c['lead_in']} with a lead-in left out; tempo changed "
          f"(beyond 4 %) on {c['changed']}. Within 4 % of the next 30 s ({c['with_next']} "
          f"tracks long enough): pv6 {c['pv6']}, every frame kept {c['pv5']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
