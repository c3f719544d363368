"""Tempo and key of the same real music at other sample rates and through other codecs.

A store serves 44.1 kHz previews, but users bring files at any rate (Opus is always
48 kHz, telephony and old games 8-16 kHz, hi-res 96 kHz). For each audio file of
``--audio-dir``: a 30 s excerpt (from ``--offset`` s), mixed to mono at its own rate,
resampled (soxr HQ, as the decoder does) to each of ``--rates``, analysed by
``extract_features``; then the same excerpt at 44.1 kHz stereo encoded as 128 kb/s MP3,
128 kb/s AAC and Ogg Vorbis and analysed by ``analyze``, as a preview would be. The
baseline is the 44.1 kHz float signal, analysed in the same run. Reported per rate or
codec: the share of clips whose tempo is within 4 % of the baseline's, within 4 % up to
an octave, and whose key (tonic and mode) is the baseline's. There is no ground truth:
this measures consistency, not accuracy.

    apt-get install wesnoth-1.16-music
    python benchmarks/rates.py --audio-dir /usr/share/games/wesnoth/1.16/data/core/music
"""

from __future__ import annotations

from _percore import pin_one_thread

pin_one_thread("benchmarks/rates.py")

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soxr  # noqa: E402

from contract.errors import PreviewvecError  # noqa: E402
from contract.layout import FEATURE_VERSION  # noqa: E402
from contract.settings import Settings  # noqa: E402
from testkit.encode import encode_audio  # noqa: E402
from testkit.mirex import tempo_correct  # noqa: E402
from workers.analysis import analyze  # noqa: E402
from workers.audio import decode_audio  # noqa: E402
from workers.features.extractor import extract_features  # noqa: E402

BASE_SR = 44_100
CLIP_S = 30.0
AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav", ".m4a", ".opus")
CODECS = (("mp3 128k", "mp3", 128_000), ("aac 128k", "m4a", 128_000), ("vorbis", "ogg", None))


def reading(descriptors: dict) -> tuple[float, str]:
    return float(descriptors["tempo_bpm"]), f"{descriptors['key']} {descriptors['mode']}"


def octave_ok(estimate: float, truth: float) -> bool:
    return any(tempo_correct(estimate * f, truth) for f in (1, 2, 0.5, 3, 1 / 3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio-dir", required=True, type=Path)
    parser.add_argument("--files", type=int, default=32, help="at most this many (0: all)")
    parser.add_argument("--offset", type=float, default=30.0, help="excerpt start, s")
    parser.add_argument("--rates", default="11025,16000,22050,32000,48000,96000")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    files = sorted(p for p in args.audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    settings = Settings()
    columns = [f"{r / 1000:g} kHz" for r in rates] + [name for name, _, _ in CODECS]
    hits: dict[str, list[tuple[bool, bool, bool]]] = {c: [] for c in columns}
    used = 0
    for path in files:
        if args.files and used >= args.files:
            break
        try:
            audio = decode_audio(path.read_bytes(), sr=None, max_duration_s=args.offset + CLIP_S,
                                 max_input_bytes=1 << 30)
        except PreviewvecError:
            continue
        start = int(args.offset * audio.sr)
        if audio.channels is None or audio.n_samples < start + int(CLIP_S * audio.sr):
            continue  # too short for the excerpt
        stereo = audio.channels[:, start:start + int(CLIP_S * audio.sr)]
        if audio.sr != BASE_SR:
            stereo = np.stack([soxr.resample(c, audio.sr, BASE_SR, "HQ") for c in stereo])
        stereo = stereo.astype(np.float32)
        mono = stereo.mean(axis=0).astype(np.float32)
        try:
            base = reading(extract_features(mono, BASE_SR).descriptors)
        except PreviewvecError:
            continue
        used += 1
        row = [path.stem[:20], f"{base[0]:.1f} {base[1]}"]
        for rate, column in zip(rates, columns, strict=False):
            y = soxr.resample(mono, BASE_SR, rate, "HQ").astype(np.float32)
            got = reading(extract_features(y, rate).descriptors)
            hits[column].append((tempo_correct(got[0], base[0]), octave_ok(got[0], base[0]),
                                 got[1] == base[1]))
            row.append(f"{got[0]:.1f}{'' if got[1] == base[1] else ' ' + got[1]}")
        for name, fmt, bitrate in CODECS:
            data = encode_audio(stereo, BASE_SR, fmt, bitrate=bitrate)
            got = reading(analyze(data, settings).features.descriptors)
            hits[name].append((tempo_correct(got[0], base[0]), octave_ok(got[0], base[0]),
                               got[1] == base[1]))
            row.append(f"{got[0]:.1f}{'' if got[1] == base[1] else ' ' + got[1]}")
        print(" | ".join(row), flush=True)
    print(f"\n`{shlex.join(['python', 'benchmarks/rates.py', *sys.argv[1:]])}` "
          f"({FEATURE_VERSION}; {used} clips, {CLIP_S:g} s from {args.offset:g} s; "
          f"baseline: the 44.1 kHz float signal)\n")
    print("| against the 44.1 kHz reading | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for label, index in (("tempo within 4 %", 0), ("tempo within 4 %, up to an octave", 1),
                         ("same key", 2)):
        cells = [f"{np.mean([h[index] for h in hits[c]]):.3f}" if hits[c] else "-"
                 for c in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
