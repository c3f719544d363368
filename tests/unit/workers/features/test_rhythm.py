"""Rhythm features: the tempo of click tracks with a known tempo."""

import numpy as np
import pytest
import soxr

from testkit.songs.render import render
from testkit.songs.score import generate_song
from tests.unit.workers.features.signals import SR, chord_song, click_track
from workers.features import rhythm
from workers.features.spectral import compute_spectra


@pytest.mark.parametrize("bpm", [80.0, 100.0, 128.0, 150.0])
def test_tempo_of_a_backbeat_click_track(bpm):
    y = click_track(bpm)
    spectra = compute_spectra(y, SR)
    envelope = rhythm.onset_envelope(spectra.mel_db, SR)
    result = rhythm.analyze_rhythm(spectra.mel_db, envelope, SR, y.size / SR)
    assert abs(result.tempo_bpm - bpm) / bpm < 0.04


@pytest.mark.parametrize(("seed", "style", "bpm"), [(3, "chamber", 140.0), (4, "ambient", 120.0)])
def test_a_silent_lead_in_leaves_the_tempo_alone(seed, style, bpm):
    """Given a rendered song without drums encoded as a preview, and the same song after
    1 s of digital silence (a render from the song's start, a track's first seconds),
    expect the same tempo, the truth within 4 %: the entry from silence (one flux spike
    10-20 times any beat) halved both before the lead-in was left out of the analysis."""
    from contract.settings import Settings
    from testkit.encode import encode_audio
    from workers.analysis import analyze

    score = generate_song(seed, tonic=seed % 12, mode="major", tempo_bpm=bpm, drums=False,
                          duration_s=30.0, style=style)
    y = render(score, 44_100, "synth")[:, : 30 * 44_100]
    lead = np.concatenate([np.zeros((y.shape[0], 44_100), np.float32), y], axis=1)
    tempi = []
    for signal in (y, lead[:, : 30 * 44_100]):
        analysis = analyze(encode_audio(signal, 44_100, "m4a"), Settings())
        tempi.append(float(analysis.features.descriptors["tempo_bpm"]))
    for tempo in tempi:
        assert abs(tempo - bpm) / bpm < 0.04, tempi


@pytest.mark.parametrize(("seed", "style", "bpm", "drums"),
                         [(5, "folk", 165.0, True), (7, "jazz", 158.0, False)])
def test_a_silent_tail_leaves_the_tempo_alone(seed, style, bpm, drums):
    """Given a rendered song encoded as a preview whose last 10 s are silent (a song that
    ends inside the clip), expect the truth within 4 %: counted as time without onsets,
    the silence halved it before the tail was left out of the analysis."""
    from contract.settings import Settings
    from testkit.encode import encode_audio
    from workers.analysis import analyze

    score = generate_song(seed, tonic=seed % 12, mode="major", tempo_bpm=bpm, drums=drums,
                          duration_s=30.0, style=style)
    y = render(score, 44_100, "synth")[:, : 30 * 44_100]
    y[:, 20 * 44_100:] = 0.0
    tempo = float(analyze(encode_audio(y, 44_100, "m4a"), Settings())
                  .features.descriptors["tempo_bpm"])
    assert abs(tempo - bpm) / bpm < 0.04, tempo


def test_music_span_leaves_out_a_lead_in_its_entry_and_a_silent_tail_only():
    """Given mel frames that sound throughout, expect the whole clip (the same analysis as
    before); after 43 silent frames, from the first frame past the entry; after one partly
    silent frame (untrimmed AAC priming: 38 dB under the median frame), the same; a quiet
    intro (25 dB under) is music, not a lead-in; a silent tail ends the span; and a clip
    with under 5 s of music left is analysed whole."""
    sr = 22_050
    mel = np.full((128, 1_292), -20.0)
    whole = (0, 1_292)
    assert rhythm.music_span(mel, sr) == whole
    mel[:, :43] = -45.0  # a quiet intro
    assert rhythm.music_span(mel, sr) == whole
    mel[:, :43] = -80.0  # 1 s at the floor power_to_db leaves under the loudest band
    assert rhythm.music_span(mel, sr) == (43 + rhythm.ENTRY_FRAMES, 1_292)
    mel[:, :43] = -20.0
    mel[:, 0] = -58.0
    assert rhythm.music_span(mel, sr) == (1 + rhythm.ENTRY_FRAMES, 1_292)
    mel[:, 0] = -20.0
    mel[:, 900:] = -80.0  # the music stops after 20.9 s
    assert rhythm.music_span(mel, sr) == (0, 899 + rhythm.ENTRY_FRAMES)
    short = np.full((128, 300), -20.0)  # 7 s, the first 2.3 s silent: 4.6 s would remain
    short[:, :100] = -80.0
    assert rhythm.music_span(short, sr) == (0, 300)
    longer = np.full((128, 400), -20.0)
    longer[:, :100] = -80.0
    assert rhythm.music_span(longer, sr) == (100 + rhythm.ENTRY_FRAMES, 400)  # 6.9 s remain


def test_music_frames_leave_out_a_long_silent_gap_and_its_re_entry_only():
    """Given 30 s of mel frames with a 5 s silent gap inside, expect every frame but the
    gap and the re-entry's flux; a 1 s rest is music; with a lead-in too, both go."""
    sr = 22_050
    mel = np.full((128, 1_292), -20.0)
    assert rhythm.music_frames(mel, sr) is None  # every frame, as before
    mel[:, 400:443] = -80.0  # a 1 s rest
    assert rhythm.music_frames(mel, sr) is None
    mel[:, 400:615] = -80.0  # a 5 s gap
    kept = rhythm.music_frames(mel, sr)
    assert kept is not None
    assert np.array_equal(kept, np.r_[0:400, 615 + rhythm.ENTRY_FRAMES:1_292])
    mel[:, :43] = -80.0  # and a lead-in
    kept = rhythm.music_frames(mel, sr)
    assert kept is not None and kept[0] == 43 + rhythm.ENTRY_FRAMES
    assert 400 not in kept and 615 + rhythm.ENTRY_FRAMES in kept


def test_a_silent_gap_leaves_the_tempo_alone():
    """Given a click track over sustained chords with 5 s silenced in its middle, expect
    its tempo, not half, and no beats in the gap: the gap counted as time without onsets
    before it was left out."""
    y = click_track(128.0, seconds=30.0) + 0.5 * chord_song(2, "major", seconds=30.0)
    y[10 * SR:15 * SR] = 0.0
    spectra = compute_spectra(y, SR)
    envelope = rhythm.onset_envelope(spectra.mel_db, SR)
    result = rhythm.analyze_rhythm(spectra.mel_db, envelope, SR, y.size / SR)
    assert abs(result.tempo_bpm - 128.0) / 128.0 < 0.04
    assert result.beat_times_s.size and not np.any(
        (result.beat_times_s > 10.2) & (result.beat_times_s < 14.9))


@pytest.mark.parametrize("signal", ["sine", "one click"])
def test_no_pulse_without_onsets(signal):
    """Given a steady tone, or one click in silence, expect tempo and beat confidence 0:
    a period read from nothing (171.6 BPM at confidence 0.96 for the tone) is no tempo."""
    t = np.arange(20 * SR) / SR
    if signal == "sine":
        y = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    else:
        y = np.zeros(t.size, np.float32)
        y[10 * SR:10 * SR + 100] = 0.5
    spectra = compute_spectra(y, SR)
    envelope = rhythm.onset_envelope(spectra.mel_db, SR)
    result = rhythm.analyze_rhythm(spectra.mel_db, envelope, SR, y.size / SR)
    assert (result.tempo_bpm, result.beat_confidence, result.beat_times_s.size) == (0, 0, 0)


def _pulse_envelope(period: int, parts: int, n_frames: int = 2_000):
    """Onset envelope: a strong pulse every ``period`` frames, weaker ones dividing it in
    ``parts``."""
    envelope = np.zeros(n_frames)
    envelope[:: period // parts] = 0.5
    envelope[::period] = 1.0
    return envelope


@pytest.mark.parametrize(
    ("parts", "base_bpm", "expected"),
    [
        (3, 62.0, 3),  # a fast 3/4 bar: three beats per base period
        (3, 70.0, 1),  # 210 BPM is faster than anyone taps, and P/2 is no beat of 3/4
        (2, 62.0, 2),
        (2, 100.0, 1),  # 200 BPM: keep the base
    ],
)
def test_faster_level_follows_the_subdivision(parts, base_bpm, expected):
    envelope = _pulse_envelope(60, parts)
    assert rhythm.faster_level_divisor(envelope, 60.0, base_bpm) == expected


@pytest.mark.parametrize(("seed", "style"), [(1, "pop"), (3, "chamber"), (6, "pop")])
def test_danceability_at_22k_agrees_with_44k(seed, style):
    # Its τ are counted in 10 ms frames; at 22.05 kHz frames of round(220.5) samples ran
    # 0.2 % short of that and the same song scored 0.07-0.19 away from its 44.1 kHz self.
    score = generate_song(seed, tonic=seed % 12, mode="major", tempo_bpm=96.0 + 7 * seed,
                          drums=style != "chamber", duration_s=20.0, style=style)
    y = render(score, 44_100, "synth").mean(axis=0).astype(np.float32)
    half = soxr.resample(y, 44_100, 22_050, "HQ")
    assert rhythm.danceability(half, 22_050) == pytest.approx(
        rhythm.danceability(y, 44_100), abs=0.02)


@pytest.mark.parametrize(("seed", "style"), [(2, "pop"), (4, "chamber"), (5, "pop")])
def test_danceability_does_not_move_when_the_clip_starts_2048_samples_later(seed, style):
    # The priming an untrimmed ADTS AAC stream adds: pv4's mean of 1/α moved by a median
    # 0.13 (of a 0.25 spread between songs) on real clips; Essentia's 1 / mean α does not.
    score = generate_song(seed, tonic=seed % 12, mode="minor", tempo_bpm=90.0 + 9 * seed,
                          drums=style != "chamber", duration_s=20.0, style=style)
    y = render(score, 44_100, "synth").mean(axis=0).astype(np.float32)
    assert rhythm.danceability(y[2048:], 44_100) == pytest.approx(
        rhythm.danceability(y, 44_100), abs=0.01)


def test_danceability_of_noise_is_that_of_uncorrelated_fluctuations():
    # White noise: the 10 ms envelope is uncorrelated, so its integrated profile is a
    # random walk with DFA exponent α ≈ 0.5 at every scale: Essentia's 1 / mean α ≈ 2, / 3.
    y = np.random.default_rng(7).standard_normal(30 * 44_100).astype(np.float32)
    assert rhythm.danceability(y, 44_100) == pytest.approx(2.0 / 3.0, abs=0.05)
