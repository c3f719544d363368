"""Render a :class:`~testkit.songs.score.Score` to stereo audio.

Two renderers:

* ``fluidsynth``: the ``fluidsynth`` command with a General MIDI SoundFont (realistic).
* ``synth``: a built-in numpy synthesizer (wavetable tones with per-family envelopes,
  noise/sine drums, panning, a light reverb). No external binary; used where fluidsynth is
  not installed, e.g. by ``previewvec demo``.

Both render every track as a separate stem and mix the stems at the tracks' ``level_db``
(so the balance holds whatever the instrument or SoundFont), and return float32 arrays of
shape ``(2, n)`` with ``n = round(score.duration_s * sr)`` (release tails past the end are
cut, with a 30 ms fade), peak-normalised to about -1 dBFS.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from testkit.songs.midi import score_to_midi
from testkit.songs.score import Note, Score, Track

RENDERERS: tuple[str, ...] = ("auto", "fluidsynth", "synth")
# General MIDI SoundFonts by name, each where its Debian package installs it (apt-get install
# fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small opl3-soundfont).
# Different sample sets (and FM synthesis for "opl3") keep accuracy from fitting one sound.
SOUNDFONTS: dict[str, Path] = {
    "fluidr3": Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    "timgm6mb": Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    "musescore": Path("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"),
    "opl3": Path("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2"),
}
PEAK_DBFS = -1.0
_FADE_OUT_S = 0.03
_FLUIDSYNTH_TIMEOUT_S = 300


# --------------------------------------------------------------------------- common


def _finalize(audio: np.ndarray, n: int, sr: int) -> np.ndarray:
    """Trim/pad to ``n`` samples, fade the cut edge, normalise the peak to -1 dBFS."""
    out = np.zeros((2, n), dtype=np.float32)
    m = min(n, audio.shape[1])
    out[:, :m] = audio[:, :m]
    fade = min(n, int(_FADE_OUT_S * sr))
    if fade > 0:
        out[:, n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = float(np.max(np.abs(out))) if n else 0.0
    if peak > 0 and np.isfinite(peak):
        out *= np.float32(10 ** (PEAK_DBFS / 20) / peak)
    return out


def _n_samples(score: Score, sr: int) -> int:
    return round(score.duration_s * sr)


def _active_rms(audio: np.ndarray, sr: int) -> float:
    """RMS over the 50 ms frames where a track plays (within 40 dB of its loudest frame).

    Power is averaged over channels, not taken of the mid signal: wide stereo patches can
    cancel in L+R.
    """
    x = np.atleast_2d(audio)
    hop = max(1, int(0.05 * sr))
    n = x.shape[1] // hop
    if n == 0:
        return 0.0
    power = np.mean(x[:, : n * hop].reshape(x.shape[0], n, hop).astype(np.float64) ** 2,
                    axis=(0, 2))
    top = float(power.max())
    if top <= 0:
        return 0.0
    return float(np.sqrt(np.mean(power[power > top * 1e-4])))


def _stem_gain(stem: np.ndarray, track: Track, sr: int) -> float:
    """Gain that puts a rendered track at its ``level_db`` in the mix."""
    rms = _active_rms(stem, sr)
    return 10 ** (track.level_db / 20) / rms if rms > 0 else 0.0


# --------------------------------------------------------------------------- fluidsynth


def find_soundfont() -> Path | None:
    """A General MIDI SoundFont: ``$PREVIEWVEC_SOUNDFONT``, else a usual system location."""
    env = os.environ.get("PREVIEWVEC_SOUNDFONT")
    if env:
        path = Path(env)
        return path if path.is_file() else None
    candidates = [
        Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
        Path("/usr/share/sounds/sf2/default-GM.sf2"),
        *sorted(Path(p) for p in glob.glob("/usr/share/soundfonts/*.sf2")),
        *sorted(Path(p) for p in glob.glob("/usr/share/sounds/sf2/*.sf2")),
    ]
    for path in candidates:
        if path.is_file():
            return path
    return None


def soundfont_path(name: str | None) -> Path | None:
    """The file of the SoundFont ``name`` (a :data:`SOUNDFONTS` key); ``None``: the default
    (:func:`find_soundfont`). Raises ``ValueError`` for an unknown name; ``None`` when the
    named SoundFont is not installed."""
    if name is None:
        return find_soundfont()
    if name not in SOUNDFONTS:
        raise ValueError(f"soundfont must be one of {tuple(SOUNDFONTS)}, not {name!r}")
    return SOUNDFONTS[name] if SOUNDFONTS[name].is_file() else None


def installed_soundfonts() -> tuple[str, ...]:
    """Names of the :data:`SOUNDFONTS` present on this machine."""
    return tuple(name for name, path in SOUNDFONTS.items() if path.is_file())


def fluidsynth_available() -> bool:
    """Whether the ``fluidsynth`` command and a SoundFont are both present."""
    return shutil.which("fluidsynth") is not None and find_soundfont() is not None


def render_fluidsynth(score: Score, sr: int = 44100, soundfont: str | None = None) -> np.ndarray:
    """Render with the ``fluidsynth`` command and a GM SoundFont: float32 ``(2, n)``.

    ``soundfont`` names one of :data:`SOUNDFONTS`; ``None`` uses :func:`find_soundfont`.
    One fluidsynth run renders all tracks one after another (see :func:`_stem_layout`);
    raises ``RuntimeError`` with fluidsynth's messages if it fails.
    """
    import soundfile as sf

    exe = shutil.which("fluidsynth")
    sf2 = soundfont_path(soundfont)
    if exe is None or sf2 is None:
        raise RuntimeError(f"fluidsynth rendering needs the fluidsynth command and the GM "
                           f"SoundFont {soundfont or '(set PREVIEWVEC_SOUNDFONT)'}")
    laid, stride_s = _stem_layout(score)
    with tempfile.TemporaryDirectory(prefix="previewvec-song-") as tmp:
        mid_path = Path(tmp) / "in.mid"
        wav_path = Path(tmp) / "out.wav"
        mid_path.write_bytes(score_to_midi(laid))
        cmd = [
            exe, "-ni", "-q", "-g", "0.6", "-r", str(sr),
            # Reverb with fluidsynth's defaults; chorus (costly) only if a track sends to it.
            "-R", "1", "-C", "1" if any(t.chorus > 0 for t in score.tracks) else "0",
            "-O", "float",  # no clipping inside fluidsynth: we mix and normalise afterwards
            "-o", "synth.dynamic-sample-loading=1",  # load only the instruments used
            "-F", str(wav_path), str(sf2), str(mid_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_FLUIDSYNTH_TIMEOUT_S,
                              check=False, stdin=subprocess.DEVNULL)
        # fluidsynth exits 0 even when it cannot load the SoundFont (it then falls back to
        # its default one, or plays nothing): its error messages count as failure too.
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        if proc.returncode != 0 or errors or not wav_path.is_file():
            raise RuntimeError(f"fluidsynth failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        data, file_sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
    if file_sr != sr:
        raise RuntimeError(f"fluidsynth wrote {file_sr} Hz audio, expected {sr} Hz")
    if not data.size or float(np.max(np.abs(data))) < 1e-6:
        raise RuntimeError(f"fluidsynth rendered silence with {sf2}: {proc.stderr.strip()}")
    audio = data.T if data.shape[1] >= 2 else np.repeat(data.T, 2, axis=0)
    n = _n_samples(score, sr)
    mix = np.zeros((2, n), dtype=np.float32)
    for k, track in enumerate(score.tracks):
        start = round(k * stride_s * sr)
        stem = np.zeros((2, n), dtype=np.float32)
        seg = audio[:2, start:start + n]
        stem[:, : seg.shape[1]] = seg
        mix += np.float32(_stem_gain(stem, track, sr)) * stem
    return _finalize(mix, n, sr)


_STEM_GAP_S = 2.0  # silence between stems: room for release and reverb tails


def _stem_layout(score: Score) -> tuple[Score, float]:
    """The tracks one after another, each alone, so that one fluidsynth run renders all stems.

    Returns the laid-out score and the stride between stems in seconds. The renderer then
    mixes the stems at each track's ``level_db`` (exact balance whatever the SoundFont).
    """
    spb = 60.0 / score.tempo_bpm
    stride_beats = math.ceil(score.n_beats + _STEM_GAP_S / spb)
    tracks = []
    for k, track in enumerate(score.tracks):
        off = k * stride_beats
        notes = [Note(n.start_beat + off, n.duration_beats, n.pitch, n.velocity)
                 for n in track.notes]
        tracks.append(dataclasses.replace(track, notes=notes, volume=100))
    laid = dataclasses.replace(score, tracks=tracks, n_beats=float(stride_beats * len(tracks)))
    return laid, stride_beats * spb


# --------------------------------------------------------------------------- numpy synth

_TABLE_SIZE = 2048


@functools.lru_cache(maxsize=256)
def _wavetable(amps: tuple[float, ...], max_harmonic: int) -> np.ndarray:
    """One period of a harmonic tone, band-limited to ``max_harmonic`` partials."""
    phase = np.arange(_TABLE_SIZE) / _TABLE_SIZE
    table = np.zeros(_TABLE_SIZE)
    for k, a in enumerate(amps[:max_harmonic], start=1):
        if a:
            table += a * np.sin(2 * np.pi * k * phase)
    peak = np.max(np.abs(table))
    return (table / peak if peak > 0 else table).astype(np.float32)


def _harmonics(kind: str) -> tuple[float, ...]:
    n = 24
    k = np.arange(1, n + 1, dtype=float)
    if kind == "saw":
        a = 1 / k
    elif kind == "square":
        a = np.where(k % 2 == 1, 1 / k, 0.0)
    elif kind == "soft":  # flute-ish, mellow pads
        a = np.exp(-(k - 1) * 1.1)
    elif kind == "reed":  # clarinet-ish odd partials, sax-ish mix
        a = np.where(k % 2 == 1, 1 / k, 0.35 / k)
    elif kind == "brass":
        a = 1 / k ** 0.8
    elif kind == "organ":
        a = np.zeros(n)
        for h, amp in ((1, 1.0), (2, 0.8), (3, 0.6), (4, 0.5), (6, 0.3), (8, 0.35)):
            a[h - 1] = amp
    elif kind == "bright":  # piano / pluck attack
        a = 1 / k ** 1.2
    elif kind == "dull":  # piano / pluck decayed
        a = np.exp(-(k - 1) * 0.9)
    elif kind == "bass":
        a = np.array([1.0, 0.55, 0.3, 0.18, 0.1, 0.06] + [0.0] * (n - 6))
    elif kind == "mallet":
        a = np.zeros(n)
        a[0], a[3], a[9] = 1.0, 0.25, 0.08
    else:  # sine
        a = np.zeros(n)
        a[0] = 1.0
    return tuple(float(x) for x in a)


# (attack tone, sustained tone, attack s, decay s, sustain level, release s, vibrato, gain)
_FAMILIES: dict[str, tuple[str, str, float, float, float, float, float, float]] = {
    "piano": ("bright", "dull", 0.003, 1.6, 0.0, 0.25, 0.0, 0.9),
    "epiano": ("mallet", "sine", 0.003, 2.0, 0.0, 0.3, 0.0, 0.9),
    "mallet": ("mallet", "sine", 0.002, 0.8, 0.0, 0.4, 0.0, 0.8),
    "organ": ("organ", "organ", 0.01, 0.1, 0.9, 0.06, 0.0, 0.55),
    "guitar": ("bright", "dull", 0.002, 1.2, 0.0, 0.15, 0.0, 0.8),
    "dist": ("saw", "saw", 0.005, 2.0, 0.7, 0.08, 0.0, 0.35),
    "bass": ("bass", "bass", 0.004, 0.5, 0.55, 0.06, 0.0, 1.1),
    "strings": ("saw", "saw", 0.08, 0.3, 0.85, 0.3, 0.004, 0.4),
    "pad": ("soft", "saw", 0.35, 1.0, 0.8, 0.8, 0.0, 0.35),
    "brass": ("brass", "brass", 0.03, 0.2, 0.8, 0.1, 0.003, 0.45),
    "reed": ("reed", "reed", 0.02, 0.2, 0.85, 0.08, 0.004, 0.5),
    "flute": ("soft", "soft", 0.04, 0.2, 0.85, 0.1, 0.005, 0.8),
    "lead": ("square", "saw", 0.005, 0.3, 0.75, 0.08, 0.003, 0.35),
    "voice": ("soft", "soft", 0.08, 0.3, 0.85, 0.25, 0.005, 0.7),
    "pluck": ("bright", "dull", 0.002, 0.6, 0.0, 0.1, 0.0, 0.8),
}


def _family(program: int) -> str:
    if program < 8:
        return "epiano" if program in (4, 5) else "piano"
    if program < 16:
        return "mallet"
    if program < 24:
        return "organ" if program < 21 else "reed"
    if program < 32:
        return "dist" if program >= 29 else "guitar"
    if program < 40:
        return "bass"
    if program < 56:
        if program in (45, 46):
            return "pluck"
        if program in (52, 53, 54):
            return "voice"
        return "strings" if program < 48 else "pad"
    if program < 64:
        return "brass"
    if program < 72:
        return "reed"
    if program < 80:
        return "flute"
    if program < 88:
        return "lead"
    if program < 104:
        return "pad"
    if program < 112:
        return "pluck"
    return "mallet"


def _envelope(n_on: int, n_total: int, sr: int, fam: tuple) -> np.ndarray:
    _, _, att, dec, sus, rel, _, _ = fam
    t = np.arange(n_total, dtype=np.float32) / sr
    a = max(1, int(att * sr))
    env = np.empty(n_total, dtype=np.float32)
    if sus > 0:
        env[:] = sus + (1 - sus) * np.exp(-np.maximum(t - att, 0) / max(dec, 1e-3) * 3)
    else:
        env[:] = np.exp(-np.maximum(t - att, 0) / max(dec, 1e-3) * 2.3)
    env[:a] *= np.linspace(0, 1, min(a, n_total), dtype=np.float32)[: min(a, n_total)]
    if n_total > n_on:
        level = env[min(n_on, n_total - 1)]
        r = n_total - n_on
        env[n_on:] = level * np.exp(-np.arange(r, dtype=np.float32) / max(1, rel * sr) * 4.6)
    return env


class _NumpySynth:
    def __init__(self, sr: int) -> None:
        self.sr = sr
        self.cache: dict[tuple, np.ndarray] = {}
        self.drums = _drum_kit(sr)

    def tone(self, program: int, pitch: int, dur_s: float) -> np.ndarray:
        fam_name = _family(program)
        fam = _FAMILIES[fam_name]
        sr = self.sr
        dur_q = round(dur_s * 50) / 50  # 20 ms buckets keep the cache effective
        key = (fam_name, pitch, dur_q)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        n_on = max(1, int(dur_q * sr))
        n = n_on + int(fam[5] * sr)
        if fam[4] == 0:  # decaying sounds need not last beyond the decay
            n = min(n, int((fam[2] + fam[3] * 2.2) * sr) + 1)
        n = max(n, 16)
        t = np.arange(n, dtype=np.float64) / sr
        max_h = max(1, int(0.45 * sr / f0))
        if fam[6] > 0:
            vib = 1 + fam[6] * np.sin(2 * np.pi * 5.2 * t) * np.minimum(1.0, t / 0.4)
            phase = np.cumsum(f0 * vib) / sr
        else:
            phase = f0 * t
        idx = ((phase % 1.0) * _TABLE_SIZE).astype(np.int32)
        bright = _wavetable(_harmonics(fam[0]), max_h)[idx]
        dull = _wavetable(_harmonics(fam[1]), max_h)[idx]
        if fam_name in ("pad", "strings"):  # a detuned second voice makes it wide and warm
            idx2 = ((phase * 1.004 % 1.0) * _TABLE_SIZE).astype(np.int32)
            dull = 0.5 * (dull + _wavetable(_harmonics(fam[1]), max_h)[idx2])
        morph = np.exp(-t / max(0.05, fam[3] * 0.35)).astype(np.float32)
        wave = dull + (bright - dull) * morph
        if fam_name == "dist":
            wave = np.tanh(2.5 * wave)
        env = _envelope(n_on, n, sr, fam)
        # Lower notes carry more energy per harmonic: tame them a little for balance.
        level = fam[7] * (1.0 if pitch >= 48 else 0.8)
        out = (wave * env * level).astype(np.float32)
        self.cache[key] = out
        return out


def _drum_kit(sr: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(12345)

    def t_of(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * sr)) / sr

    def noise(seconds: float, lo: float, hi: float) -> np.ndarray:
        n = int(seconds * sr)
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / sr)
        spec[(f < lo) | (f > hi)] = 0
        x = np.fft.irfft(spec, n)
        return x / (np.max(np.abs(x)) + 1e-9)

    kit: dict[int, np.ndarray] = {}
    t = t_of(0.45)
    freq = 48 + 110 * np.exp(-t / 0.035)
    kick = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.16)
    kick[: int(0.004 * sr)] += noise(0.004, 1000, 8000) * 0.4
    kit[36] = kick
    kit[35] = kick
    t = t_of(0.3)
    snare = (0.55 * noise(0.3, 1200, 9000) * np.exp(-t / 0.07)
             + 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.05))
    kit[38] = kit[40] = snare
    t = t_of(0.25)
    kit[39] = noise(0.25, 900, 6000) * np.exp(-t / 0.06) * (1 + (t < 0.02) * 0.6)
    t = t_of(0.08)
    kit[37] = noise(0.08, 1500, 8000) * np.exp(-t / 0.012) * 0.8
    t = t_of(0.09)
    kit[42] = noise(0.09, 7000, 16000) * np.exp(-t / 0.025) * 0.5
    kit[44] = kit[42] * 0.7
    t = t_of(0.5)
    kit[46] = noise(0.5, 6000, 16000) * np.exp(-t / 0.16) * 0.45
    t = t_of(1.2)
    bell = sum(np.sin(2 * np.pi * f * t) for f in (3100, 4400, 5900)) / 3
    kit[51] = (noise(1.2, 5000, 14000) * 0.3 + 0.2 * bell) * np.exp(-t / 0.4)
    kit[59] = kit[53] = kit[51]
    t = t_of(1.8)
    kit[49] = noise(1.8, 3000, 15000) * np.exp(-t / 0.6) * 0.6
    kit[57] = kit[55] = kit[52] = kit[49]
    t = t_of(0.15)
    kit[54] = noise(0.15, 5000, 15000) * np.exp(-t / 0.04) * 0.45
    kit[70] = noise(0.08, 4000, 12000) * np.exp(-t_of(0.08) / 0.02) * 0.35
    kit[56] = np.sign(np.sin(2 * np.pi * 560 * t)) * np.exp(-t / 0.03) * 0.3
    for note, f in ((41, 80), (43, 95), (45, 110), (47, 130), (48, 150), (50, 175)):
        t = t_of(0.4)
        sweep = f * (1 + 0.5 * np.exp(-t / 0.03))
        kit[note] = np.sin(2 * np.pi * np.cumsum(sweep) / sr) * np.exp(-t / 0.18)
    return {k: v.astype(np.float32) for k, v in kit.items()}


def _pan_gains(pan: int) -> tuple[float, float]:
    x = (min(max(pan, 0), 127) / 127.0) * np.pi / 2
    return float(np.cos(x)), float(np.sin(x))


def _render_track(synth: _NumpySynth, track: Track, spb: float, n: int) -> np.ndarray:
    sr = synth.sr
    buf = np.zeros(n + sr * 4, dtype=np.float32)
    for note in track.notes:
        start = int(note.start_beat * spb * sr)
        if start >= n:
            continue
        if track.is_drum:
            wave = synth.drums.get(note.pitch)
            if wave is None:
                wave = synth.drums[37]
        else:
            wave = synth.tone(track.program, note.pitch, note.duration_beats * spb)
        gain = (note.velocity / 127.0) ** 1.6
        end = min(start + wave.size, buf.size)
        buf[start:end] += gain * wave[: end - start]
    return buf[:n]


def _reverb_ir(sr: int, seconds: float = 1.6) -> np.ndarray:
    rng = np.random.default_rng(7)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal((2, n)) * np.exp(-t / (seconds / 6.9))
    ir[:, : int(0.012 * sr)] = 0  # pre-delay
    # Darken the tail: a one-pole low-pass via cumulative averaging in the frequency domain.
    spec = np.fft.rfft(ir, axis=1)
    f = np.fft.rfftfreq(n, 1 / sr)
    spec *= 1 / (1 + (f / 4000.0) ** 2)
    ir = np.fft.irfft(spec, n, axis=1)
    return (ir / np.sqrt(np.sum(ir**2, axis=1, keepdims=True))).astype(np.float32)


def render_synth(score: Score, sr: int = 44100) -> np.ndarray:
    """Render with the built-in numpy synthesizer (no external programs): float32 ``(2, n)``."""
    from scipy.signal import fftconvolve

    n = _n_samples(score, sr)
    spb = 60.0 / score.tempo_bpm
    synth = _NumpySynth(sr)
    dry = np.zeros((2, n), dtype=np.float32)
    send = np.zeros((2, n), dtype=np.float32)
    for track in score.tracks:
        mono = _render_track(synth, track, spb, n)
        mono *= np.float32(_stem_gain(mono, track, sr))
        gl, gr = _pan_gains(track.pan)
        wet = track.reverb / 127.0
        dry[0] += gl * mono
        dry[1] += gr * mono
        send[0] += wet * gl * mono
        send[1] += wet * gr * mono
    if np.any(send):
        ir = _reverb_ir(sr)
        tail = np.stack([fftconvolve(send[c], ir[c])[:n] for c in range(2)])
        dry += 0.3 * tail.astype(np.float32)
    return _finalize(dry, n, sr)


# --------------------------------------------------------------------------- dispatch


def resolve_renderer(renderer: str = "auto") -> str:
    """The concrete renderer ``render`` would use: ``"fluidsynth"`` or ``"synth"``."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {RENDERERS}, not {renderer!r}")
    if renderer == "auto":
        return "fluidsynth" if fluidsynth_available() else "synth"
    return renderer


def render(score: Score, sr: int = 44100, renderer: str = "auto",
           soundfont: str | None = None) -> np.ndarray:
    """Render ``score``: fluidsynth when available (``"auto"``), else the numpy synth.

    ``soundfont`` (a :data:`SOUNDFONTS` name) only applies to fluidsynth.
    """
    if resolve_renderer(renderer) == "fluidsynth":
        return render_fluidsynth(score, sr, soundfont)
    return render_synth(score, sr)


# --------------------------------------------------------------------------- mix variations


def master(
    audio: np.ndarray, sr: int, *, gain_db: float = 0.0, reverb: float = 0.0,
    noise_snr_db: float | None = None, seed: int = 0,
) -> np.ndarray:
    """A rendered mix ``(2, n)`` played back otherwise: a room, noise, a level.

    ``reverb`` (0..1) mixes in a 1.6 s diffuse tail (:func:`_reverb_ir`) at that wet share;
    ``noise_snr_db`` adds pink noise that many dB below the mix's RMS; ``gain_db`` then
    scales the peak-normalised (-1 dBFS) result: negative is a quieter master, positive a
    louder one pushed through a soft clipper (``tanh``), as a limiter-squashed master is.
    Returns float32 ``(2, n)``.
    """
    from scipy.signal import fftconvolve

    x = np.asarray(audio, dtype=np.float64)
    n = x.shape[1]
    if reverb > 0:
        ir = _reverb_ir(sr)
        wet = np.stack([fftconvolve(x[c], ir[c])[:n] for c in range(2)])
        # Scale the tail to the dry signal's level so ``reverb`` is a true wet share.
        dry_rms, wet_rms = np.sqrt(np.mean(x**2)), np.sqrt(np.mean(wet**2))
        if wet_rms > 0:
            x = (1 - reverb) * x + reverb * wet * (dry_rms / wet_rms)
    if noise_snr_db is not None:
        rng = np.random.default_rng(seed)
        spec = np.fft.rfft(rng.standard_normal((2, n)), axis=1)
        f = np.fft.rfftfreq(n, 1 / sr)
        spec[:, 1:] /= np.sqrt(f[1:])  # 1/f power: pink
        spec[:, 0] = 0
        noise = np.fft.irfft(spec, n, axis=1)
        scale = np.sqrt(np.mean(x**2)) / max(np.sqrt(np.mean(noise**2)), 1e-12)
        x = x + noise * scale * 10 ** (-noise_snr_db / 20)
    peak = float(np.max(np.abs(x))) if n else 0.0
    if peak > 0:
        x = x * (10 ** (PEAK_DBFS / 20) / peak)
    g = 10 ** (gain_db / 20)
    if gain_db > 0:
        x = np.tanh(x * g) / np.tanh(g)  # louder, peaks held below full scale
        x *= 10 ** (PEAK_DBFS / 20)
    else:
        x = x * g
    return x.astype(np.float32)
