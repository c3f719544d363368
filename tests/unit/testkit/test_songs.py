"""Generated songs: deterministic scores, valid MIDI, notes in key, audible renders, cached sets."""

from __future__ import annotations

import io
import json
import os

import mido
import numpy as np
import pytest

from testkit.songs import (
    MODES,
    NOTE_NAMES,
    STYLES,
    build_set,
    demo_specs,
    eval_specs,
    fluidsynth_available,
    generate_song,
    load_truth,
    render_fluidsynth,
    render_synth,
    scale_pitch_classes,
    score_to_midi,
)
from testkit.songs.midi import TICKS_PER_BEAT

SR = 22050


def _song(seed: int = 7, **kw):
    args = {"tonic": 9, "mode": "minor", "tempo_bpm": 112.0, "drums": True, "duration_s": 12.0}
    args.update(kw)
    return generate_song(seed, **args)


# --------------------------------------------------------------------------- score


def test_same_seed_gives_same_score_and_midi():
    a, b = _song(3, style="pop"), _song(3, style="pop")
    assert a == b
    assert score_to_midi(a) == score_to_midi(b)


def test_different_seeds_give_different_songs():
    assert score_to_midi(_song(1)) != score_to_midi(_song(2))


def test_auto_style_is_seeded():
    a = _song(5, style=None)
    assert a.style in STYLES
    assert _song(5, style=None) == a


def test_key_name_and_duration():
    song = _song(tonic=6, mode="major", tempo_bpm=96.0, duration_s=20.0)
    assert song.key_name == "F# major"
    assert song.duration_s == pytest.approx(20.0)
    assert song.n_beats == pytest.approx(20.0 * 96.0 / 60.0)
    assert _song(tonic=10, mode="minor").key_name == "A# minor"


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("drums", [True, False])
def test_every_style_makes_a_valid_song(style, drums):
    for tempo in (72.0, 126.0, 178.0):
        song = _song(11, style=style, drums=drums, tempo_bpm=tempo)
        assert song.style == style
        assert song.has_drums is drums
        assert song.beats_per_bar in (3, 4)
        assert any(t.is_drum for t in song.tracks) is drums
        names = {t.name for t in song.tracks}
        assert {"bass", "comp", "melody"} <= names
        channels = [t.channel for t in song.tracks]
        assert len(set(channels)) == len(channels)
        for track in song.tracks:
            assert track.notes, track.name
            assert (track.channel == 9) is track.is_drum
            assert 0 <= track.program <= 127
            for n in track.notes:
                assert 0 <= n.start_beat < song.n_beats
                assert n.duration_beats > 0
                assert n.start_beat + n.duration_beats <= song.n_beats + 1e-6
                assert 1 <= n.velocity <= 127
                assert (35 <= n.pitch <= 81) if track.is_drum else (24 <= n.pitch <= 100)


@pytest.mark.parametrize("tonic", range(12))
@pytest.mark.parametrize("mode", MODES)
def test_pitched_notes_are_in_the_key(tonic, mode):
    for seed, style in enumerate(STYLES):
        song = generate_song(seed, tonic=tonic, mode=mode, tempo_bpm=90.0 + 7 * seed,
                             drums=seed % 2 == 0, duration_s=15.0, style=style)
        natural = scale_pitch_classes(tonic, mode)
        allowed = scale_pitch_classes(tonic, mode, harmonic=True)
        pcs = [n.pitch % 12 for n in song.pitched_notes]
        assert set(pcs) <= allowed, (style, sorted(set(pcs) - allowed))
        # Only the harmonic-minor leading tone may leave the natural scale, and sparingly.
        outside = sum(pc not in natural for pc in pcs)
        assert outside <= 0.2 * len(pcs)


def test_songs_start_and_mostly_rest_on_the_tonic():
    starts_on_tonic = 0
    n = 40
    for seed in range(n):
        song = generate_song(seed, tonic=2, mode="major", tempo_bpm=110.0, drums=True,
                             duration_s=10.0)
        bass = min(next(t for t in song.tracks if t.name == "bass").notes,
                   key=lambda n: n.start_beat)
        starts_on_tonic += bass.pitch % 12 == 2
    assert starts_on_tonic >= 0.8 * n


def test_three_four_songs_set_beats_per_bar():
    song = _song(4, style="waltz", tempo_bpm=120.0)
    assert song.beats_per_bar == 3
    kick = [n.start_beat for t in song.tracks if t.is_drum for n in t.notes if n.pitch == 36]
    # A kick on every downbeat, one every 3 quarter notes (within humanisation).
    for bar in range(int(song.n_beats // 3)):
        assert any(abs(b - 3 * bar) < 0.05 for b in kick), bar


def test_swung_songs_delay_offbeats_not_beats():
    song = _song(2, style="jazz", tempo_bpm=140.0)
    assert song.swing > 0.6
    ride = [n.start_beat % 1 for t in song.tracks if t.is_drum for n in t.notes if n.pitch == 51]
    offbeats = [f for f in ride if 0.2 < f < 0.8]
    assert offbeats and all(f > 0.58 for f in offbeats)


def test_drum_timing_humanisation_is_small():
    song = _song(9, style="rock", tempo_bpm=120.0)
    drums = next(t for t in song.tracks if t.is_drum)
    grid_err_s = [min(n.start_beat % 0.25, 0.25 - n.start_beat % 0.25) * 0.5 for n in drums.notes]
    assert max(grid_err_s) <= 0.0105
    assert len({n.velocity for n in drums.notes}) > 5


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        _song(mode="dorian")
    with pytest.raises(ValueError):
        _song(tonic=12)
    with pytest.raises(ValueError):
        _song(style="polka")


# --------------------------------------------------------------------------- midi


@pytest.mark.parametrize("drums", [True, False])
def test_midi_round_trip(drums):
    song = _song(8, drums=drums, tempo_bpm=127.3)
    mid = mido.MidiFile(file=io.BytesIO(score_to_midi(song)))
    assert mid.type == 1
    assert mid.ticks_per_beat == TICKS_PER_BEAT
    tempos = [m.tempo for t in mid.tracks for m in t if m.type == "set_tempo"]
    assert len(tempos) == 1
    assert mido.tempo2bpm(tempos[0]) == pytest.approx(song.tempo_bpm, abs=1e-3)
    sigs = [m for t in mid.tracks for m in t if m.type == "time_signature"]
    assert sigs[0].numerator == song.beats_per_bar
    note_channels = {m.channel for t in mid.tracks for m in t if m.type == "note_on"}
    assert (9 in note_channels) is drums
    programs = {m.channel: m.program for t in mid.tracks for m in t if m.type == "program_change"}
    for track in song.tracks:
        assert programs[track.channel] == track.program
    n_on = sum(1 for t in mid.tracks for m in t if m.type == "note_on" and m.velocity > 0)
    n_off = sum(1 for t in mid.tracks for m in t
                if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0))
    n_notes = sum(len(t.notes) for t in song.tracks)
    assert n_on == n_off
    assert 0.97 * n_notes <= n_on <= n_notes
    assert mid.length == pytest.approx(song.duration_s, abs=0.05)


# --------------------------------------------------------------------------- rendering


def _check_audio(audio: np.ndarray, song, sr: int) -> None:
    assert audio.dtype == np.float32
    assert audio.shape == (2, round(song.duration_s * sr))
    assert np.all(np.isfinite(audio))
    peak = float(np.max(np.abs(audio)))
    assert 10 ** (-1.5 / 20) <= peak <= 1.0
    # Sound from start to end: no silent second anywhere.
    per_second = np.sqrt(np.mean(audio[:, : sr * int(song.duration_s)].reshape(2, -1, sr) ** 2,
                                 axis=(0, 2)))
    assert per_second.min() > 1e-3


def _chroma_and_onsets(audio: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    import librosa

    y = audio.mean(axis=0)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr).mean(axis=1)
    onsets = librosa.onset.onset_detect(y=y, sr=sr)
    return chroma / chroma.sum(), len(onsets) / (y.size / sr)


def _check_sounds_in_key(audio: np.ndarray, song, sr: int) -> None:
    chroma, onset_rate = _chroma_and_onsets(audio, sr)
    in_key = sum(chroma[pc] for pc in scale_pitch_classes(song.tonic, song.mode, harmonic=True))
    assert in_key > 0.6, f"only {in_key:.2f} of the chroma energy is in {song.key_name}"
    rank = np.argsort(chroma)[::-1].tolist()
    assert rank.index(song.tonic) < 5, f"tonic {NOTE_NAMES[song.tonic]} is not prominent"
    assert onset_rate > 1.0  # rhythm is audible, with or without drums


@pytest.mark.parametrize(("style", "drums"), [("pop", True), ("ballad", False), ("jazz", False)])
def test_render_synth_is_musical_stereo(style, drums):
    song = _song(21, style=style, drums=drums, tempo_bpm=100.0, duration_s=15.0)
    audio = render_synth(song, sr=SR)
    _check_audio(audio, song, SR)
    assert not np.allclose(audio[0], audio[1])  # panned tracks: real stereo
    _check_sounds_in_key(audio, song, SR)


def test_render_synth_is_deterministic():
    song = _song(4, duration_s=5.0)
    np.testing.assert_array_equal(render_synth(song, sr=SR), render_synth(song, sr=SR))


def _require_fluidsynth() -> None:
    if fluidsynth_available():
        return
    reason = ("fluidsynth and a GM SoundFont are not installed "
              "(apt install fluidsynth fluid-soundfont-gm)")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize(("style", "drums"), [("rock", True), ("folk", False)])
def test_render_fluidsynth(style, drums):
    _require_fluidsynth()
    song = _song(31, style=style, drums=drums, tempo_bpm=132.0, duration_s=15.0)
    audio = render_fluidsynth(song, sr=SR)
    _check_audio(audio, song, SR)
    _check_sounds_in_key(audio, song, SR)


def test_render_fluidsynth_reports_a_broken_soundfont(tmp_path, monkeypatch):
    _require_fluidsynth()
    bad = tmp_path / "broken.sf2"
    bad.write_bytes(b"not a soundfont" * 100)
    monkeypatch.setenv("PREVIEWVEC_SOUNDFONT", str(bad))
    with pytest.raises(RuntimeError, match="fluidsynth"):
        render_fluidsynth(_song(duration_s=2.0), sr=SR)


# --------------------------------------------------------------------------- sets


def test_eval_specs_cover_keys_tempos_and_drums():
    specs = eval_specs(48, seed=1)
    assert specs == eval_specs(48, seed=1)
    assert specs != eval_specs(48, seed=2)
    keys = [(s.tonic, s.mode) for s in specs]
    assert all(keys.count(k) == 2 for k in set(keys)) and len(set(keys)) == 24
    tempos = sorted(s.tempo_bpm for s in specs)
    assert 70.0 <= tempos[0] < 75.0 and 170.0 < tempos[-1] <= 180.0
    assert sum(s.drums for s in specs) == 24
    assert len({s.style for s in specs}) >= 10
    assert len({s.seed for s in specs}) == 48


def test_demo_specs_are_varied():
    specs = demo_specs()
    assert 6 <= len(specs) <= 10
    assert len({s.style for s in specs}) == len(specs)
    assert any(s.drums for s in specs) and not all(s.drums for s in specs)


def test_build_set_writes_truth_and_reuses_files(tmp_path):
    specs = eval_specs(3, seed=4)
    records = build_set(specs, tmp_path, fmt="wav", renderer="synth", sr=SR, duration_s=4.0)
    assert [r["file"] for r in records] == ["song-000.wav", "song-001.wav", "song-002.wav"]
    assert load_truth(tmp_path) == records
    lines = (tmp_path / "truth.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["tempo_bpm"] == specs[0].tempo_bpm
    assert first["key"] == specs[0].key_name
    assert first["renderer"] == "synth"
    assert {"file", "seed", "tempo_bpm", "tonic", "mode", "key", "drums", "style",
            "renderer"} <= set(first)
    mtimes = [(tmp_path / r["file"]).stat().st_mtime_ns for r in records]
    assert build_set(specs, tmp_path, fmt="wav", renderer="synth", sr=SR,
                     duration_s=4.0) == records
    assert [(tmp_path / r["file"]).stat().st_mtime_ns for r in records] == mtimes
    # A different duration is a different song: rebuilt.
    build_set(specs[:1], tmp_path, fmt="wav", renderer="synth", sr=SR, duration_s=3.0)
    assert (tmp_path / "song-000.wav").stat().st_mtime_ns != mtimes[0]
    assert len(load_truth(tmp_path)) == 1
