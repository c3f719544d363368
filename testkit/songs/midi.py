"""Standard MIDI file export of a :class:`~testkit.songs.score.Score` (type 1, mido)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from testkit.songs.score import NOTE_NAMES, Score, Track

if TYPE_CHECKING:
    import mido

TICKS_PER_BEAT = 480

# mido key-signature names for each tonic (sharps, except where only flats exist in MIDI).
_MAJOR_KEYS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_KEYS = ("Cm", "C#m", "Dm", "D#m", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "A#m", "Bm")


def _ticks(beats: float) -> int:
    return max(0, round(beats * TICKS_PER_BEAT))


def _track_events(track: Track) -> list[tuple[int, int, mido.Message]]:
    """(tick, order, message): note-offs sort before note-ons at the same tick."""
    import mido  # only MIDI export needs it: the numpy-synth path runs without mido

    ch = track.channel
    events: list[tuple[int, int, mido.Message]] = [
        (0, 0, mido.Message("program_change", channel=ch, program=track.program)),
        (0, 0, mido.Message("control_change", channel=ch, control=7, value=track.volume)),
        (0, 0, mido.Message("control_change", channel=ch, control=10, value=track.pan)),
        (0, 0, mido.Message("control_change", channel=ch, control=91, value=track.reverb)),
        (0, 0, mido.Message("control_change", channel=ch, control=93, value=track.chorus)),
    ]
    # Same-pitch notes on one channel must not overlap, or the first note-off cuts the second.
    by_pitch: dict[int, list[tuple[int, int, int]]] = {}
    for note in track.notes:
        on = _ticks(note.start_beat)
        off = max(on + 1, _ticks(note.start_beat + note.duration_beats))
        by_pitch.setdefault(note.pitch, []).append((on, off, note.velocity))
    for pitch, spans in by_pitch.items():
        spans.sort()
        for i, (on, off, vel) in enumerate(spans):
            if i + 1 < len(spans) and off > spans[i + 1][0]:
                off = max(on + 1, spans[i + 1][0])
            if i + 1 < len(spans) and spans[i + 1][0] == on:
                continue  # a duplicate onset: keep the later one only
            events.append((on, 2, mido.Message("note_on", channel=ch, note=pitch,
                                               velocity=max(1, min(127, vel)))))
            events.append((off, 1, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1], e[2].bytes()))
    return events


def score_to_midi(score: Score) -> bytes:
    """Encode ``score`` as a type-1 Standard MIDI File (480 ticks/beat, drums on channel 10)."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    end_tick = _ticks(score.n_beats)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("track_name", name=f"previewvec song {score.seed}", time=0))
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(score.tempo_bpm), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=score.beats_per_bar,
                                 denominator=4, time=0))
    keys = _MAJOR_KEYS if score.mode == "major" else _MINOR_KEYS
    meta.append(mido.MetaMessage("key_signature", key=keys[score.tonic], time=0))
    meta.append(mido.MetaMessage("text", text=f"{NOTE_NAMES[score.tonic]} {score.mode}, "
                                 f"{score.tempo_bpm:g} bpm, {score.style}", time=0))
    meta.append(mido.MetaMessage("end_of_track", time=end_tick))
    mid.tracks.append(meta)
    for track in score.tracks:
        mtrack = mido.MidiTrack()
        mtrack.append(mido.MetaMessage("track_name", name=track.name, time=0))
        last = 0
        for tick, _order, msg in _track_events(track):
            mtrack.append(msg.copy(time=tick - last))
            last = tick
        mtrack.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - last)))
        mid.tracks.append(mtrack)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()
