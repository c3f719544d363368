"""``previewvec demo``: the main job on embedded defaults, end to end on generated songs."""

from __future__ import annotations

import time
from pathlib import Path

from previewvec.errors import PreviewvecError
from previewvec.settings import Settings

DEMO_FORMATS = ("m4a", "mp3", "ogg", "flac", "wav")


def run_demo(settings: Settings, *, out_dir: Path, renderer: str = "auto") -> int:
    """Generate songs with known tempo and key, encode them, extract, print a table."""
    from previewvec.songs import build_set, demo_specs, resolve_renderer
    from workers.analysis import analyze
    from workers.features.extractor import warm_up

    chosen = resolve_renderer(renderer)
    print(f"generating {len(demo_specs())} songs ({chosen}) in {out_dir} ...", flush=True)
    files: list[tuple[Path, dict]] = []
    specs = demo_specs()
    for i, fmt in enumerate(DEMO_FORMATS):
        subset = specs[i :: len(DEMO_FORMATS)]
        if not subset:
            continue
        rows = build_set(subset, out_dir / fmt, fmt=fmt, renderer=chosen)
        files.extend((out_dir / fmt / row["file"], row) for row in rows)

    print(f"warming the extractor: {warm_up(settings.analysis_sr):.1f} s", flush=True)
    header = (
        f"{'file':<16}{'truth':>22}{'tempo':>8}{'key':>10}{'LUFS':>7}"
        f"{'energy':>8}{'dance':>7}{'ms':>6}"
    )
    print(header)
    print("-" * len(header))
    failed = 0
    for path, truth in files:
        started = time.perf_counter()
        try:
            d = analyze(str(path), settings).features.descriptors
        except PreviewvecError as exc:
            failed += 1
            print(f"{path.parent.name + '/' + path.name:<16} failed: {exc.code}: {exc.message}")
            continue
        elapsed_ms = 1000 * (time.perf_counter() - started)
        key = f"{d['key']} {str(d['mode'])[:3]}"
        print(
            f"{path.parent.name + '/' + path.name:<16}"
            f"{truth['tempo_bpm']:>8.1f} {truth['key']:>13}"
            f"{d['tempo_bpm']:>8.1f}{key:>10}{d['loudness_lufs']:>7.1f}"
            f"{d['energy']:>8.2f}{d['danceability']:>7.2f}{elapsed_ms:>6.0f}"
        )
    return 1 if failed else 0
