"""Generated songs with known tempo and key, rendered to audio.

* :func:`generate_song` writes a multi-instrument General MIDI score (:class:`Score`).
* :func:`score_to_midi` turns it into a Standard MIDI File.
* :func:`render` plays it with fluidsynth and a GM SoundFont when installed, else with a
  built-in numpy synthesizer (:func:`render_synth`).
* :func:`eval_specs` / :func:`demo_specs` + :func:`build_set` make cached sets of encoded
  songs with a ``truth.jsonl``; :func:`write_demo_set` is the demo's one call.

Tempo truth is the beat pulse (the quarter note; the dotted quarter in 6/8 and 12/8 songs of
the wide set, ``dataset.wide_specs``); keys are ``"F# major"``-style names.
"""

from testkit.songs.dataset import (
    GENERATOR_VERSION,
    SongSpec,
    build_set,
    demo_specs,
    eval_specs,
    load_truth,
    write_demo_set,
)
from testkit.songs.midi import score_to_midi
from testkit.songs.render import (
    find_soundfont,
    fluidsynth_available,
    render,
    render_fluidsynth,
    render_synth,
    resolve_renderer,
)
from testkit.songs.score import (
    MODES,
    NOTE_NAMES,
    STYLES,
    Note,
    Score,
    Track,
    generate_song,
    key_name,
    pick_style,
    scale_pitch_classes,
)

__all__ = [
    "GENERATOR_VERSION",
    "MODES",
    "NOTE_NAMES",
    "STYLES",
    "Note",
    "Score",
    "SongSpec",
    "Track",
    "build_set",
    "demo_specs",
    "eval_specs",
    "find_soundfont",
    "fluidsynth_available",
    "generate_song",
    "key_name",
    "load_truth",
    "pick_style",
    "render",
    "render_fluidsynth",
    "render_synth",
    "resolve_renderer",
    "scale_pitch_classes",
    "score_to_midi",
    "write_demo_set",
]
