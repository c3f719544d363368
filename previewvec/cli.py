"""The ``previewvec`` command line: every command of the product."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from previewvec.errors import PreviewvecError
from previewvec.settings import Settings


def _prepare_runtime(settings: Settings) -> None:
    """Persist numba's JIT cache so a fresh process skips ~20 s of compilation.

    Must run before librosa (and so numba) is imported.
    """
    settings.numba_cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(settings.numba_cache_dir))


def _extract_one(path: str, settings: Settings) -> dict[str, object]:
    from workers.analysis import analyze

    try:
        result = analyze(path, settings)
    except PreviewvecError as exc:
        return {"input": path, "ok": False, "error": exc.to_dict()}
    except OSError as exc:
        return {"input": path, "ok": False, "error": {"code": "unreadable", "message": str(exc)}}
    features = result.features
    return {
        "input": path,
        "ok": True,
        "feature_version": features.feature_version,
        "descriptors": features.descriptors,
        "vector": [float(v) for v in features.vector],
    }


def cmd_extract(args: argparse.Namespace, settings: Settings) -> int:
    failed = 0
    for path in args.paths:
        record = _extract_one(path, settings)
        failed += not record["ok"]
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    from workers.features.layout import feature_names

    for name in feature_names():
        print(name)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from previewvec.demo import run_demo

    return run_demo(settings, out_dir=Path(args.out), renderer=args.renderer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="previewvec",
        description="Audio-feature vectors from preview clips, at catalog scale.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "extract",
        help="extract features from audio files (JSON Lines on stdout)",
        description="Print one JSON object per input: features, or a typed error. "
        "Exit status 1 if any input failed (all inputs are processed first).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=".m4a, .mp3, .ogg, .flac or .wav")
    p.set_defaults(handler=cmd_extract)

    p = sub.add_parser(
        "features",
        help="print the ordered names of the vector's dimensions",
        description="Print every dimension name of the feature vector, one per line, in order.",
    )
    p.set_defaults(handler=cmd_features)

    p = sub.add_parser(
        "demo",
        help="run the main job on embedded defaults with generated songs",
        description="Generate a small set of songs with known tempo and key, encode them as "
        "AAC/MP3/OGG/FLAC/WAV, extract their features and print a summary table.",
    )
    p.add_argument("--out", default="data/demo", help="where generated songs go")
    p.add_argument(
        "--renderer",
        default="auto",
        choices=("auto", "fluidsynth", "synth"),
        help="fluidsynth (General MIDI soundfont) when installed, else the built-in synth",
    )
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    _prepare_runtime(settings)
    return int(args.handler(args, settings))


if __name__ == "__main__":
    sys.exit(main())
