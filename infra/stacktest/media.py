"""The stack test's preview host: generates short songs, then serves them over HTTP.

Runs in a previewvec container on the compose network (service ``media``), so workers
fetch previews from ``http://media:8080/`` exactly as they fetch a store's CDN. The songs
come from testkit (numpy synth, AAC in M4A like iTunes previews); ``/ready`` answers 200
once every file is written (the service's healthcheck).

    python media.py --count 60 --seconds 6 --port 8080 [--dir /media]

With ``--dir`` (a host folder ./dev stack-test mounts) songs made by an earlier run are
reused (testkit's build_set keeps files whose truth record is unchanged).
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from testkit.songs.dataset import build_set, eval_specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--dir", type=Path, default=None, help="keep songs here")
    parser.add_argument("--slow-from", type=int, default=None, metavar="N",
                        help="songs N and later answer after --delay seconds")
    parser.add_argument("--delay", type=float, default=2.0)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="media-"))
    started = time.perf_counter()
    records = build_set(eval_specs(args.count, seed=14), root, fmt="m4a", renderer="synth",
                        duration_s=args.seconds)
    (root / "index.json").write_text(json.dumps([r["file"] for r in records]))
    (root / "ready").write_text("ok\n")  # removed by ./dev stack-test before each run
    print(f"media: {len(records)} songs of {args.seconds:.0f} s in "
          f"{time.perf_counter() - started:.1f} s; serving {root} on :{args.port}", flush=True)
    slow = {r["file"] for i, r in enumerate(records)
            if args.slow_from is not None and i >= args.slow_from}

    class Handler(SimpleHTTPRequestHandler):
        # A slow CDN for the second batch: it is surely still running when the stack
        # test kills workers, however fast the machine extracts.
        def do_GET(self) -> None:
            if self.path.lstrip("/") in slow:
                time.sleep(args.delay)
            super().do_GET()

    handler = functools.partial(Handler, directory=str(root))
    ThreadingHTTPServer(("0.0.0.0", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
