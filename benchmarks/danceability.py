"""Danceability: pv5 (Essentia's DFA) beside pv4's formula and Essentia's ``Danceability``.

On 30 s excerpts (30-60 s) of freely licensed recordings from Debian game-music packages,
mono at their own rate (44.1 kHz only), this prints for each formula:

* its spread across the clips (standard deviation), the share clipped at 1.0;
* its stability: the median and 90th percentile change when the clip starts 2048 samples
  later (the priming an untrimmed ADTS AAC stream adds);
* its Spearman rank correlation with Essentia's ``Danceability`` and the largest relative
  difference from Essentia's value ÷ 3 on the clips below the clip at 1.0.

pv4's formula (mean of 1/α over non-overlapping segments, ÷ 3, clipped) is the baseline,
re-implemented here as it was (``git show bbd6288:workers/features/rhythm.py``)::

    .venv/bin/pip install -e '.[peers]'
    .venv/bin/python benchmarks/danceability.py --clips-per-album 10
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np
import soundfile as sf
from scipy.stats import spearmanr

from workers.features import rhythm

ALBUMS = (  # the similarity benchmark's ten soundtracks (benchmarks/similarity.py)
    "/usr/share/games/wesnoth/1.16/data/core/music",
    "/usr/share/games/singularity/music",
    "/usr/share/hyperrogue/music",
    "/usr/share/scummvm/drascula/audio",
    "/usr/share/games/fretsonfire/data/songs/muldjord",
    "/usr/share/games/fretsonfire/data/songs/sectoid",
    "/usr/share/games/supertux2/music",
    "/usr/share/games/hedgewars/Data/Music",
    "/usr/share/planetblupi/music",
    "/usr/share/games/colobot/music",
)
PRIMING_SAMPLES = 2048


def pv4_danceability(y: np.ndarray, sr: int) -> float:
    """pv4's formula: mean(1/α) ÷ 3 over non-overlapping segments, frames of round(10 ms)."""
    frame = max(round(0.01 * sr), 1)
    n_frames = y.size // frame
    if n_frames < 8:
        return 0.0
    amplitude = y[: n_frames * frame].reshape(n_frames, frame).std(axis=1)
    profile = np.cumsum(amplitude - amplitude.mean())
    taus: list[int] = []
    tau = 31.0
    while tau <= 880.0 and int(tau) <= n_frames // 2:
        if not taus or int(tau) != taus[-1]:
            taus.append(int(tau))
        tau *= 1.1
    fluctuation = []
    for t in taus:
        segments = profile[: (n_frames // t) * t].reshape(-1, t)
        x = np.arange(t) - (t - 1) / 2
        slope = segments @ x / (x @ x)
        residual = segments - segments.mean(axis=1, keepdims=True) - np.outer(slope, x)
        fluctuation.append(np.sqrt(np.mean(residual**2)))
    alpha = np.diff(np.log10(np.maximum(fluctuation, 1e-12))) / np.diff(np.log10(taus))
    alpha = alpha[alpha > 1e-3]
    return float(np.clip(np.mean(1.0 / alpha) / 3.0, 0.0, 1.0)) if alpha.size else 0.0


def load_clips(per_album: int) -> list[tuple[np.ndarray, int]]:
    clips = []
    for album in ALBUMS:
        for path in sorted(glob.glob(album + "/**/*.ogg", recursive=True))[:per_album]:
            if path.endswith(("guitar.ogg", "rhythm.ogg", "drums.ogg")):  # stems
                continue
            try:
                data, sr = sf.read(path, dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError):
                continue
            y = data.mean(axis=1)
            if sr != 44_100 or y.size < 62 * sr or np.abs(y[30 * sr: 60 * sr]).max() < 1e-3:
                continue
            clips.append((y[30 * sr: 60 * sr], sr))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-album", type=int, default=10)
    args = parser.parse_args()
    import essentia.standard as es

    clips = load_clips(args.clips_per_album)
    essentia = np.array([es.Danceability(sampleRate=sr)(y)[0] for y, sr in clips])
    print(f"{len(clips)} clips of {len(ALBUMS)} albums (44.1 kHz, 30-60 s)\n")
    print("| formula | spread (std) | at 1.0 | median change, +2048 samples | p90 change "
          "| Spearman ρ with Essentia | max rel. diff. from Essentia ÷ 3 (unclipped) "
          "| CPU ms / clip |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, formula in (("pv4: mean(1/α) ÷ 3", pv4_danceability),
                          ("pv5: Essentia's DFA ÷ 3", rhythm.danceability)):
        start = time.process_time()
        values = np.array([formula(y, sr) for y, sr in clips])
        cpu_ms = 1000 * (time.process_time() - start) / len(clips)
        shifted = np.array([formula(y[PRIMING_SAMPLES:], sr) for y, sr in clips])
        change = np.abs(values - shifted)
        print(f"| {name} | {values.std():.3f} | {np.mean(values >= 0.9999):.3f} "
              f"| {np.median(change):.4f} | {np.percentile(change, 90):.4f} "
              f"| {spearmanr(values, essentia)[0]:.3f} "
              f"| {np.max((np.abs(3 * values - essentia) / essentia)[values < 0.9999]):.1e} "
              f"| {cpu_ms:.1f} |")


if __name__ == "__main__":
    main()
