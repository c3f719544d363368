"""The wide set (issue 17): metres, feels, scales, textures, key changes, SoundFonts, mastering.

Given a wide spec, expect a score whose note times and pitches agree with the truth record:
the pulse and metre, the scale, the key change's place in the clip.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from testkit.songs import generate_song, scale_pitch_classes
from testkit.songs.dataset import (
    HELDOUT_SEEDS,
    WIDE_COMPOUND_TEMPO_RANGE,
    WIDE_TEMPO_RANGE,
    SongSpec,
    Variation,
    _truth_record,
    _wide_score,
    eval_specs,
    heldout_specs,
    render_spec,
    wide_specs,
)
from testkit.songs.render import SOUNDFONTS, fluidsynth_available, installed_soundfonts, master
from testkit.songs.score import MODAL_SCALES, modulate

SR = 22050
CLIP_S = 30.0
# _finish humanises by at most 10 ms; in beats at up to 200 BPM that is ≤ 0.034.
JITTER_BEATS = 0.035


def _record(spec: SongSpec, index: int = 0) -> dict:
    return _truth_record(spec, index, "m4a", "fluidsynth", 44100, CLIP_S)


def _onsets(score, *, drum_pitch: int | None = None) -> np.ndarray:
    notes = [n for t in score.tracks for n in t.notes
             if (t.is_drum and n.pitch == drum_pitch) or (drum_pitch is None and not t.is_drum)]
    return np.array([n.start_beat for n in notes])


def _off_grid(times: np.ndarray, grid: float) -> np.ndarray:
    """Distance (beats) of each time from the nearest multiple of ``grid``."""
    return np.abs(times - np.round(times / grid) * grid)


# --------------------------------------------------------------------------- specs and truth


def test_wide_specs_are_seeded_and_balanced():
    specs = wide_specs(48)
    assert specs == wide_specs(48)
    assert specs != wide_specs(48, seed=18)
    w = [s.wide for s in specs]
    assert collections.Counter(v.soundfont for v in w) == {f: 12 for f in SOUNDFONTS}
    assert sum(s.drums for s in specs) == 24
    meters = collections.Counter(v.meter for v in w)
    assert set(meters) == {"4/4", "3/4", "6/8", "12/8"} and min(meters.values()) >= 9
    for s in specs:
        lo, hi = (WIDE_COMPOUND_TEMPO_RANGE if s.wide.meter in ("6/8", "12/8")
                  else WIDE_TEMPO_RANGE)
        assert lo <= s.tempo_bpm <= hi
        assert s.drums or s.wide.texture in ("band", "pad", "drone")
        assert not s.drums or s.wide.texture == "band"
    tempos = [s.tempo_bpm for s in wide_specs(96) if s.wide.meter in ("4/4", "3/4")]
    assert min(tempos) < 62 and max(tempos) > 185


def test_heldout_specs_are_fixed_and_unlike_the_tuning_set():
    held = heldout_specs(24)
    assert held == wide_specs(24, seed=HELDOUT_SEEDS[0])
    tuning_seeds = {s.seed for s in wide_specs(96)}
    assert not tuning_seeds & {s.seed for s in held}


def test_plain_records_keep_their_fields():
    """Sets built before the wide set (eval_specs) keep identical records, so their cached
    files are reused."""
    record = _record(eval_specs(1, seed=3)[0])
    assert set(record) == {"file", "seed", "tempo_bpm", "tonic", "mode", "key", "drums",
                           "style", "renderer", "beats_per_bar", "swing", "duration_s", "sr",
                           "generator"}


def test_wide_records_state_pulse_metre_scale_and_mix():
    for i, spec in enumerate(wide_specs(24)):
        r = _record(spec, i)
        w = spec.wide
        assert r["tempo_bpm"] == spec.tempo_bpm
        assert r["meter"] == w.meter
        assert r["pulse"] == ("dotted quarter" if w.meter in ("6/8", "12/8") else "quarter")
        assert r["soundfont"] == w.soundfont
        assert r["mode"] in ("major", "minor")
        if w.scale:
            assert r["scale"] == w.scale and MODAL_SCALES[w.scale][1] == r["mode"]
        assert r["key"].endswith(r["mode"])
        for field in ("feel", "texture", "gain_db", "reverb", "noise_snr_db",
                      "start_offset_s", "key_change", "key_change_s", "key_start"):
            assert field in r


def test_key_change_lies_in_its_half_of_the_clip_and_truth_is_the_majority_key():
    changed = [s for s in wide_specs(96) if s.wide.key_change != "none"]
    assert {s.wide.key_change for s in changed} == {"early", "late"}
    for spec in changed:
        r = _record(spec)
        score = _wide_score(spec, CLIP_S)
        at_beat, semitones = score.key_change
        # The first moved note sounds at the recorded time (clip seconds).
        assert r["key_change_s"] == pytest.approx(
            at_beat * 60 / spec.tempo_bpm - spec.wide.start_offset_s, abs=1e-3)
        if spec.wide.key_change == "early":
            assert 0 < r["key_change_s"] < CLIP_S / 2
            assert r["key"] == r["key_end"] != r["key_start"]
        else:
            assert CLIP_S / 2 < r["key_change_s"] < CLIP_S
            assert r["key"] == r["key_start"] != r["key_end"]
        # Pitched notes after the change are in the new key's scale.
        scale = spec.wide.scale
        steps = (MODAL_SCALES[scale][0] if scale else None)
        new_tonic = (spec.tonic + semitones) % 12
        allowed = ({(new_tonic + s) % 12 for s in steps} if steps
                   else scale_pitch_classes(new_tonic, spec.mode, harmonic=True))
        after = [n.pitch % 12 for t in score.tracks if not t.is_drum for n in t.notes
                 if n.start_beat >= at_beat]
        assert after and set(after) <= allowed


# --------------------------------------------------------------------------- scores


def _wide_song(meter="4/4", feel="straight", scale=None, texture="band", drums=True,
               tempo=100.0, mode="major", seed=5, style="pop"):
    return generate_song(seed, tonic=2, mode=mode, tempo_bpm=tempo, drums=drums,
                         duration_s=20.0, style=style, meter=meter, feel=feel, scale=scale,
                         texture=texture)


@pytest.mark.parametrize("meter", ["6/8", "12/8"])
def test_compound_metres_divide_the_pulse_in_three(meter):
    for seed in range(4):
        song = _wide_song(meter=meter, seed=seed, tempo=80.0)
        assert song.meter == meter and song.beats_per_bar == 4
        hats = np.concatenate([_onsets(song, drum_pitch=p) for p in (42, 51)])
        kicks = _onsets(song, drum_pitch=36)
        assert hats.size and kicks.size
        # Every hi-hat/ride stroke is on an eighth of the dotted-quarter pulse (⅓ beat), and
        # at least one third of them between beats: the pulse is divided in three, not two.
        assert _off_grid(hats, 1 / 3).max() < JITTER_BEATS
        assert np.mean(_off_grid(hats, 1.0) > 0.2) > 0.3
        assert _off_grid(kicks, 1 / 3).max() < JITTER_BEATS
        assert np.mean(_off_grid(kicks, 1.0) < JITTER_BEATS) >= 0.5  # mostly on the pulse


def test_three_four_has_downbeats_every_three_beats():
    song = _wide_song(meter="3/4", tempo=120.0, style="rock")
    assert song.beats_per_bar == 3
    kicks = _onsets(song, drum_pitch=36)
    # The waltz kit plays its kick on the downbeats: beats 0, 3, 6, ...
    assert np.mean(_off_grid(kicks, 3.0) < JITTER_BEATS) > 0.8


def test_swing_delays_the_offbeat_eighths():
    song = _wide_song(feel="swing", tempo=110.0)
    assert 0.58 < song.swing <= 2 / 3 + 1e-9
    hats = _onsets(song, drum_pitch=42)
    if not hats.size:
        hats = _onsets(song, drum_pitch=51)
    frac = hats - np.floor(hats + 1e-9)
    offbeats = frac[(frac > 0.2) & (frac < 0.9)]
    assert offbeats.size and np.all(np.abs(offbeats - song.swing) < JITTER_BEATS)


def test_syncopated_feel_puts_bass_notes_between_beats():
    for seed in range(3):
        song = _wide_song(feel="sync", seed=seed)
        bass = _onsets_of(song, "bass")
        assert np.mean(_off_grid(bass, 1.0) > 0.2) > 0.15


def _onsets_of(song, name: str) -> np.ndarray:
    return np.array([n.start_beat for t in song.tracks if t.name == name for n in t.notes])


@pytest.mark.parametrize("texture", ["pad", "drone"])
def test_pads_and_drones_have_no_drums_and_sustained_chords(texture):
    song = _wide_song(texture=texture, drums=False, tempo=180.0)
    assert not any(t.is_drum for t in song.tracks)
    comp = next(t for t in song.tracks if t.name == "comp")
    assert min(n.duration_beats for n in comp.notes) >= 0.9  # whole chords, no comping
    if texture == "drone":
        bass = next(t for t in song.tracks if t.name == "bass")
        assert {n.pitch % 12 for n in bass.notes} == {2}  # the tonic, D
    with pytest.raises(ValueError):
        _wide_song(texture=texture, drums=True)


@pytest.mark.parametrize("scale", sorted(MODAL_SCALES))
def test_modal_songs_use_their_scale_and_rest_on_the_tonic(scale):
    mode = MODAL_SCALES[scale][1]
    song = _wide_song(scale=scale, mode=mode, seed=11)
    allowed = {(2 + s) % 12 for s in MODAL_SCALES[scale][0]}
    assert {n.pitch % 12 for n in song.pitched_notes} <= allowed
    assert song.scale == scale and song.mode == mode
    bass = next(t for t in song.tracks if t.name == "bass")
    assert bass.notes[0].pitch % 12 == 2  # phrases start on the tonic chord
    if scale == "aeolian":  # no raised leading tone
        assert (2 + 11) % 12 not in {n.pitch % 12 for n in song.pitched_notes}
    with pytest.raises(ValueError):
        _wide_song(scale=scale, mode="minor" if mode == "major" else "major")


def test_modulate_moves_only_pitched_notes_after_the_bar():
    song = _wide_song()
    moved = modulate(song, 16.0, 3)
    assert moved.key_change == (16.0, 3)
    for before, after in zip(song.tracks, moved.tracks, strict=True):
        if before.is_drum:
            assert before.notes == after.notes
            continue
        for a, b in zip(before.notes, after.notes, strict=True):
            assert b.start_beat == a.start_beat
            assert b.pitch == a.pitch + (3 if a.start_beat >= 16.0 else 0)
            assert b.start_beat + b.duration_beats <= 16.0 + 1e-6 or a.start_beat >= 16.0


# --------------------------------------------------------------------------- audio


def test_master_sets_level_noise_and_length():
    rng = np.random.default_rng(0)
    t = np.arange(SR * 2) / SR
    x = np.stack([np.sin(2 * np.pi * 220 * t)] * 2).astype(np.float32) * 0.5
    x[:, : SR // 2] *= 0.01 + rng.random(SR // 2) * 0  # a quiet start
    nominal = master(x, SR)
    quiet = master(x, SR, gain_db=-20.0)
    loud = master(x, SR, gain_db=6.0)
    noisy = master(x, SR, noise_snr_db=10.0, seed=1)

    def rms(a):
        return float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))

    assert nominal.shape == quiet.shape == loud.shape == noisy.shape == x.shape
    assert 20 * np.log10(rms(nominal) / rms(quiet)) == pytest.approx(20.0, abs=0.01)
    assert rms(loud) > rms(nominal) and np.max(np.abs(loud)) < 1.0
    assert np.max(np.abs(master(x, SR, reverb=0.4))) == pytest.approx(10 ** (-1 / 20), rel=1e-4)
    # The noise is added 10 dB below the mix, before the peak normalisation.
    assert rms(noisy - nominal * rms(noisy) / rms(nominal)) > 0.05 * rms(noisy)


@pytest.mark.skipif(not fluidsynth_available() or len(installed_soundfonts()) < 2,
                    reason="needs fluidsynth and at least two of the GM SoundFonts")
def test_each_soundfont_renders_the_clip_differently():
    base = wide_specs(1)[0]
    clips = {}
    for font in installed_soundfonts():
        spec = SongSpec(base.seed, 0, "major", 120.0, True, "pop",
                        Variation(soundfont=font, start_offset_s=0.7))
        clip = render_spec(spec, sr=SR, duration_s=4.0)
        assert clip.shape == (2, 4 * SR)
        assert np.max(np.abs(clip)) > 0.1
        clips[font] = clip
    fonts = sorted(clips)
    for a, b in itertools.pairwise(fonts):
        assert not np.allclose(clips[a], clips[b], atol=1e-3)


def test_clip_cut_mid_bar_has_the_scores_onsets_shifted_by_the_offset():
    """The rendered clip starts ``start_offset_s`` into the song: its onsets are the score's
    note times minus the offset (numpy synth: no external program needed)."""
    import librosa

    offset_s, clip_s, tempo = 0.83, 8.0, 120.0
    spec = SongSpec(4242, 0, "major", tempo, True, "rock",
                    Variation(meter="12/8", start_offset_s=offset_s))
    clip = render_spec(spec, sr=SR, renderer="synth", duration_s=clip_s)
    assert clip.shape == (2, round(clip_s * SR))
    found = librosa.onset.onset_detect(y=clip.mean(axis=0), sr=SR, units="time",
                                       backtrack=False)
    score = _wide_score(spec, clip_s)
    expected = np.array(sorted({round(n.start_beat * 60 / tempo - offset_s, 3)
                                for t in score.tracks for n in t.notes}))
    expected = expected[(expected >= 0) & (expected <= clip_s)]
    found = found[(found > 0.1) & (found < clip_s - 0.1)]
    assert found.size > 8
    # librosa's onset frames lag the attack by up to a hop or two (23 ms at 512 samples).
    nearest = np.min(np.abs(found[:, None] - expected[None, :]), axis=1)
    assert np.mean(nearest < 0.05) > 0.9
    # ... and not when the offset is ignored (the test can tell the difference).
    unshifted = expected + offset_s
    assert np.mean(np.min(np.abs(found[:, None] - unshifted[None, :]), axis=1) < 0.05) < 0.9
