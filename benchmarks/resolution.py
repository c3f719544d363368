"""Resolution cost and precision: text-only iTunes vs identifier-first, one and two sources.

A labelled catalogue of MusicBrainz-shaped releases is generated (seeded) together with
what the two stores hold for it; a local server on 127.0.0.1 answers the iTunes Search API
(``/search``, ``/lookup?id=`` and ``/lookup?upc=``) and the Deezer API (``/album/upc:``,
``/album/<id>/tracks``, ``/track/isrc:``, code 800 for "no data") in their documented
shapes from that catalogue. The answers are *generated*, not recorded from the services.

Each strategy resolves the same releases as a dump (``Resolver.resolve_dump``, the path of
``submit --dump``) with the real clients, the real cascade and the real shared GCRA
limiters on a private Redis. The published limits (iTunes 20 calls/min, Deezer 50 per
5 s) are applied as real waits, both sped up by ``--factor`` (printed), so the relative
pace of the two sources is the real one.

* ``text-itunes``: today's path — no barcode used, iTunes only (album search + lookup,
  then a song search per track left);
* ``ids-itunes``: identifier-first, iTunes only (``lookup?upc``, then text);
* ``ids-both``: identifier-first over iTunes and Deezer (``PREVIEWVEC_SOURCES`` default).

Reported: calls per recording for each source, the share of recordings resolved by each
rule, precision (right matches over all matches; a wrong match is the costly error) and
recall on the labels, and the projected days for 35 M recordings at one IP per source,
from the calls (calls ÷ the published daily limit, the slower source deciding) and from
the measured wall time × factor. Then ``ids-both`` again with every recording stored:
the calls a re-run saves.

Then **dump order** (``--order``, issue 15 point 3): the same albums plus reissues and
compilations that share their recordings, resolved as ``previewvec submit --dump`` does
(``Resolver`` with the run's skip checks, ``submit`` publishing to the private Redis as
broker, an empty local store), three ways in the same run, each from a cold cache:

* ``dump order, no skip``: as before this change, every release resolved in full;
* ``dump order``: the dump's own order, recordings already queued or resolved in the run
  not resolved again (a release entirely known costs no call);
* ``coverage plan``: ``--order coverage`` (producers/plan.py): the greedy cover first,
  then the rest.

The overlap sample (seeded with ``--seed``): for every album, with probability
``--p-reissue`` a reissue or regional edition (a new release id, the same recordings in
the same order, plus 0–2 bonus tracks no store has, under a barcode the stores do not
know: resolved through the text search, which finds the original album), and
``--p-compilation`` × albums compilations of 10–16 tracks drawn from random albums (no
barcode, various artists); then the lines are shuffled (``random.Random(seed)``), since
MusicBrainz orders its dump by row id, not by what covers what.

    python benchmarks/resolution.py                  # 150 releases, factor 60
    python benchmarks/resolution.py --releases 400 --factor 30 --json resolution.json
    python benchmarks/resolution.py --strategies none --order  # the dump-order section
    python benchmarks/resolution.py --plan-releases 1000000    # planning's time and memory

The catalogue mix (share with a barcode, with ISRCs, store coverage, traps) is an
assumption, printed with the results; change it with the ``--p-*`` options.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.settings import Settings  # noqa: E402
from contract.state import Runs, connect  # noqa: E402
from contract.store import open_store  # noqa: E402
from previewvec.localredis import LocalRedis  # noqa: E402
from producers.matching import normalize  # noqa: E402
from producers.plan import make_plan  # noqa: E402
from producers.resolve import BUSY_S, Resolver  # noqa: E402
from producers.submit import submit  # noqa: E402
from tests.local_http import serve_in_background, stop_server  # noqa: E402

ITUNES_PER_MIN = 20.0  # Apple: "approximately 20 calls per minute"
DEEZER_PER_S = 10.0  # Deezer: 50 requests per 5 seconds
TARGET_RECORDINGS = 35_000_000
WORDS = ("amber", "static", "glass", "hollow", "pine", "radio", "moon", "paper", "lantern",
         "north", "river", "ember", "velvet", "signal", "harbor", "winter", "cobalt", "echo",
         "violet", "orbit", "meadow", "copper", "silent", "neon", "arrow", "garden",
         "thunder", "marble", "shadow", "candle", "ocean", "prairie", "falcon", "crystal",
         "mirror", "saffron", "tidal", "willow", "granite", "comet")


# -- the labelled catalogue ----------------------------------------------------------------
@dataclass
class Mix:
    barcode: float = 0.55  # releases with a barcode in MusicBrainz
    isrcs: float = 0.5  # barcoded releases whose recordings carry ISRCs
    wrong_barcode: float = 0.04  # the barcode leads to another album in the stores
    itunes: float = 0.75  # releases iTunes carries
    deezer: float = 0.8  # releases Deezer carries
    partial: float = 0.1  # the store album lacks a track or two
    multi_disc: float = 0.1
    live_trap: float = 0.06  # a live take in MB; the stores have only the studio track
    remaster_trap: float = 0.05  # MB original; Deezer has only a remaster (own ISRC)


@dataclass
class Catalog:
    releases: list[dict[str, Any]] = field(default_factory=list)
    truth: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    it_albums: dict[int, dict[str, Any]] = field(default_factory=dict)
    it_upc: dict[str, int] = field(default_factory=dict)
    dz_albums: dict[int, dict[str, Any]] = field(default_factory=dict)
    dz_upc: dict[str, int] = field(default_factory=dict)
    dz_isrc: dict[str, dict[str, Any]] = field(default_factory=dict)


def _title(rng: random.Random, used: set[str], n: int) -> str:
    """A title of ``n`` words not in ``used`` (more words once those run short)."""
    for tries in range(1000):
        t = " ".join(rng.sample(WORDS, n + tries // 50)).title()
        if t not in used:
            used.add(t)
            return t
    raise RuntimeError("no unused title left")


def _it_row(rid: int, tid: int, artist: str, album: str, t: dict[str, Any]) -> dict[str, Any]:
    return {"wrapperType": "track", "kind": "song", "collectionId": rid, "trackId": tid,
            "artistName": artist, "collectionName": album, "trackName": t["store_title"],
            "trackTimeMillis": t["ms"] + 400, "discNumber": t["disc"],
            "trackNumber": t["pos"],
            "previewUrl": f"https://audio-ssl.itunes.apple.com/p/{tid}.m4a",
            "trackViewUrl": f"https://music.apple.com/us/album/x/{rid}?i={tid}"}


def _dz_row(tid: int, artist: str, album: str, t: dict[str, Any], isrc: str) -> dict[str, Any]:
    return {"id": tid, "title": t["store_title"], "isrc": isrc, "duration": t["ms"] // 1000,
            "track_position": t["pos"], "disk_number": t["disc"],
            "preview": f"https://cdnt-preview.dzcdn.net/api/1/1/{tid}.mp3?hdnea=exp=1",
            "link": f"https://www.deezer.com/track/{tid}", "artist": {"name": artist},
            "album": {"title": album}, "type": "track"}


def make_catalog(n: int, mix: Mix, seed: int) -> Catalog:
    rng = random.Random(seed)
    cat, used = Catalog(), set()
    for k in range(n):
        artist = _title(rng, used, 2)
        album = _title(rng, used, 3)
        count = rng.randint(8, 13)
        discs = 2 if rng.random() < mix.multi_disc else 1
        barcode = f"{600000000000 + k:013d}" if rng.random() < mix.barcode else ""
        has_isrcs = bool(barcode) and rng.random() < mix.isrcs
        live_at = rng.randrange(count) if rng.random() < mix.live_trap else -1
        remaster_at = rng.randrange(count) if rng.random() < mix.remaster_trap else -1
        tracks, titles = [], set()  # track titles: distinct within a release
        for i in range(count):
            title = _title(rng, titles, rng.choice((1, 2, 2, 3)))
            per = (count + discs - 1) // discs
            t = {"title": title, "store_title": title, "ms": rng.randint(150, 330) * 1000,
                 "disc": i // per + 1, "pos": i % per + 1, "rid": f"rec-{k}-{i}",
                 "isrc": f"QZ{k % 1000:03d}{k:05d}{i:02d}"}
            tracks.append(t)
        rid_it, rid_dz = 1_000_000 + k, 2_000_000 + k
        in_it, in_dz = rng.random() < mix.itunes, rng.random() < mix.deezer
        drop = set(rng.sample(range(count), rng.randint(1, 2))) if rng.random() < mix.partial \
            else set()
        media: dict[int, list[dict[str, Any]]] = {}
        it_rows, dz_rows = [], []
        for i, t in enumerate(tracks):
            rec = {"id": t["rid"], "title": t["title"], "length": t["ms"],
                   "isrcs": [t["isrc"]] if has_isrcs and i != live_at else []}
            truth: set[tuple[str, str]] = set()
            if i == live_at:  # MB: the live take; the stores: the studio track
                rec["disambiguation"] = "live, 2004-06-12: Paradiso"
                rec["length"] = t["ms"] + 25_000
            if in_it and i not in drop:
                it_rows.append(_it_row(rid_it, rid_it * 100 + i, artist, album, t))
                if i not in (live_at,):
                    truth.add(("itunes", str(rid_it * 100 + i)))
            if in_dz and i not in drop:
                isrc = t["isrc"]
                if i == remaster_at:  # only the remaster, under its own ISRC
                    isrc = isrc[:5] + "9" + isrc[6:]
                    t = {**t, "store_title": t["title"] + " (2019 Remaster)"}
                row = _dz_row(rid_dz * 100 + i, artist, album, t, isrc)
                dz_rows.append(row)
                cat.dz_isrc[isrc] = row
                if i not in (live_at, remaster_at):
                    truth.add(("deezer", str(rid_dz * 100 + i)))
            if i == remaster_at:
                it_rows = [r for r in it_rows if r["trackId"] != rid_it * 100 + i]
                truth.discard(("itunes", str(rid_it * 100 + i)))
            cat.truth[t["rid"]] = truth
            media.setdefault(tracks[i]["disc"], []).append(
                {"position": tracks[i]["pos"], "title": tracks[i]["title"],
                 "length": rec["length"], "recording": rec})
        store_upc = barcode
        if barcode and rng.random() < mix.wrong_barcode and k:
            store_upc = f"{700000000000 + k:013d}"  # the stores list it under another code
            other = rng.randrange(k)  # and the release's barcode leads to another album
            if 1_000_000 + other in cat.it_albums:
                cat.it_upc[barcode] = 1_000_000 + other
            if 2_000_000 + other in cat.dz_albums:
                cat.dz_upc[barcode] = 2_000_000 + other
        if in_it:
            cat.it_albums[rid_it] = {
                "collection": {"wrapperType": "collection", "collectionType": "Album",
                               "collectionId": rid_it, "collectionName": album,
                               "artistName": artist, "trackCount": count},
                "tracks": it_rows}
            if store_upc:
                cat.it_upc[store_upc] = rid_it
        if in_dz:
            cat.dz_albums[rid_dz] = {"id": rid_dz, "title": album, "upc": store_upc,
                                     "nb_tracks": count, "artist": {"name": artist},
                                     "tracks": dz_rows}
            if store_upc:
                cat.dz_upc[store_upc] = rid_dz
        cat.releases.append({
            "id": f"rel-{k}", "title": album, "barcode": barcode,
            "artist-credit": [{"name": artist, "joinphrase": "",
                               "artist": {"id": f"art-{k}", "name": artist}}],
            "media": [{"position": d, "tracks": ts} for d, ts in sorted(media.items())]})
    return cat


def add_overlap(cat: Catalog, seed: int, p_reissue: float,
                p_compilation: float) -> list[dict[str, Any]]:
    """Reissues and compilations sharing the albums' recordings (see the docstring); the
    albums and these, shuffled, as the dump's lines."""
    rng = random.Random(seed * 7919 + 1)
    albums = list(cat.releases)
    extra: list[dict[str, Any]] = []
    for k, rel in enumerate(albums):
        if rng.random() >= p_reissue:
            continue
        media = json.loads(json.dumps(rel["media"]))
        last = media[-1]["tracks"]
        for b in range(rng.randint(0, 2)):  # bonus tracks: recordings no store has
            rid = f"bonus-{k}-{b}"
            last.append({"position": len(last) + 1, "title": f"Demo {b + 1}",
                         "length": 200_000, "recording": {"id": rid, "title": f"Demo {b + 1}",
                                                          "length": 200_000, "isrcs": []}})
            cat.truth[rid] = set()
        extra.append({**rel, "id": f"reissue-{k}", "media": media,
                      "barcode": f"{800000000000 + k:013d}" if rel["barcode"] else ""})
    tracks = [(rel, t) for rel in albums for m in rel["media"] for t in m["tracks"]]
    for c in range(int(p_compilation * len(albums))):
        picked = rng.sample(tracks, rng.randint(10, 16))
        media = [{"position": 1, "tracks": [
            {**t, "position": i + 1,
             "recording": {**t["recording"], "artist-credit": rel["artist-credit"]}}
            for i, (rel, t) in enumerate(picked)]}]
        extra.append({"id": f"comp-{c}", "title": f"Compilation {c + 1}", "barcode": "",
                      "artist-credit": [{"name": "Various Artists", "joinphrase": "",
                                         "artist": {"id": "va", "name": "Various Artists"}}],
                      "media": media})
    lines = albums + extra
    random.Random(seed).shuffle(lines)
    return lines


# -- the local stand-in for both services --------------------------------------------------
def _tokens(text: str) -> set[str]:
    return set(normalize(text).split())


class StoreServer:
    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = json.dumps(server.answer(self.path)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        serve_in_background(self.httpd)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, raw: str) -> Any:
        parts = urlsplit(raw)
        path, q = unquote(parts.path), {k: v[0] for k, v in parse_qs(parts.query).items()}
        if path == "/search":
            return self._search(q)
        if path in ("/search/album", "/search/track"):
            return self._dz_search(path.rsplit("/", 1)[1], q)
        if path == "/lookup":
            rid = int(q["id"]) if "id" in q else self.cat.it_upc.get(q.get("upc", ""))
            album = self.cat.it_albums.get(rid or -1)
            rows = [album["collection"], *album["tracks"]] if album else []
            return {"resultCount": len(rows), "results": rows}
        no_data = {"error": {"type": "DataException", "message": "no data", "code": 800}}
        if path.startswith("/album/upc:"):
            album = self.cat.dz_albums.get(self.cat.dz_upc.get(path[11:], -1))
            return {k: v for k, v in album.items() if k != "tracks"} if album else no_data
        if path.startswith("/album/") and path.endswith("/tracks"):
            album = self.cat.dz_albums.get(int(path.split("/")[2]))
            return {"data": album["tracks"], "total": len(album["tracks"])} if album \
                else no_data
        if path.startswith("/track/isrc:"):
            return self.cat.dz_isrc.get(path[12:]) or no_data
        return no_data

    def _search(self, q: dict[str, str]) -> dict[str, Any]:
        want = _tokens(q.get("term", ""))
        scored = []
        for album in self.cat.it_albums.values():
            rows = [album["collection"]] if q.get("entity") == "album" else album["tracks"]
            for row in rows:
                name = row.get("trackName") or row["collectionName"]
                hit = len(want & _tokens(f"{row['artistName']} {name}"))
                if hit >= max(1, len(want) - 1):
                    scored.append((hit, row))
        scored.sort(key=lambda s: -s[0])
        rows = [r for _, r in scored[: int(q.get("limit", 10))]]
        return {"resultCount": len(rows), "results": rows}

    def _dz_search(self, kind: str, q: dict[str, str]) -> dict[str, Any]:
        want = _tokens(q.get("q", "").replace("artist:", " ").replace("album:", " ")
                       .replace("track:", " "))
        scored = []
        for album in self.cat.dz_albums.values():
            rows = ([{k: v for k, v in album.items() if k != "tracks"}] if kind == "album"
                    else album["tracks"])
            for row in rows:
                hit = len(want & _tokens(f"{row['artist']['name']} {row['title']}"))
                if hit >= max(1, len(want) - 1):
                    scored.append((hit, row))
        scored.sort(key=lambda s: -s[0])
        rows = [r for _, r in scored[: int(q.get("limit", 10))]]
        return {"data": rows, "total": len(rows)}

    def stop(self) -> None:
        stop_server(self.httpd)


# -- one strategy ----------------------------------------------------------------------
def run(strategy: str, cat: Catalog, server: StoreServer, redis_url: str, factor: float,
        dump: Path, stored: bool = False) -> dict[str, Any]:
    sources = ("itunes", "deezer") if strategy == "ids-both" else ("itunes",)
    settings = Settings(itunes_url=server.url, deezer_url=server.url, broker_url=redis_url,
                        sources=sources, itunes_rate_per_min=ITUNES_PER_MIN * factor,
                        deezer_rate_per_s=DEEZER_PER_S * factor)
    client = connect(redis_url, decode=False, retry=False)
    client.flushdb()  # no cached answers, fresh limiters
    resolver = Resolver.build(settings, redis_client=client, need_musicbrainz=False,
                              stored=(lambda rid: True) if stored else None)
    resolver.busy_s = BUSY_S / factor  # "busy" is measured in the sped-up time too
    started, cpu0 = time.perf_counter(), time.process_time()
    results = [res for _, res in resolver.resolve_dump(dump)]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    rules: Counter[str] = Counter()
    right = wrong = 0
    wrong_examples = []
    for res in results:
        if res.job is None:
            continue
        rules[res.job.match_rule or "?"] += 1
        if (res.job.source, res.job.source_track_id) in cat.truth[res.recording_id]:
            right += 1
        else:
            wrong += 1
            wrong_examples.append(f"{res.recording_id} → {res.job.source}:"
                                  f"{res.job.source_track_id} ({res.reason[:120]})")
    n = len(results)
    findable = sum(bool(v) for v in cat.truth.values())
    calls = resolver.calls
    per_rec = {s: calls.get(s, 0) / n for s in ("itunes", "deezer")}
    per_day = {"itunes": ITUNES_PER_MIN * 1440, "deezer": DEEZER_PER_S * 86400}
    days_calls = max(per_rec[s] * TARGET_RECORDINGS / per_day[s] for s in sources)
    return {
        "strategy": strategy, "recordings": n, "releases": len(cat.releases),
        "calls": {s: calls.get(s, 0) for s in sources},
        "calls_per_recording": {s: round(per_rec[s], 4) for s in sources},
        "calls_per_resolved": round(sum(calls.get(s, 0) for s in sources) /
                                    max(1, right + wrong), 4),
        "resolved": right + wrong, "right": right, "wrong": wrong,
        "precision": round(right / max(1, right + wrong), 4),
        "recall": round(right / max(1, findable), 4),
        "share_by_rule": {r: round(c / n, 4) for r, c in sorted(rules.items()) if c},
        "barcode_untrusted": resolver.stats["barcode_untrusted"],
        "wall_s": round(wall, 2),
        # this process's CPU (the local server's threads included): the wall projection
        # holds only while this is small next to the wall (the waits dominate)
        "cpu_s": round(cpu, 2),
        "projected_days_35M_by_calls": round(days_calls, 1),
        "projected_days_35M_by_wall": round(wall * factor * TARGET_RECORDINGS / n / 86400, 1),
        "wrong_examples": wrong_examples[:5],
    }


def run_order(variant: str, cat: Catalog, server: StoreServer, redis_url: str,
              factor: float, dump: Path, tmp: Path) -> dict[str, Any]:
    """One dump-order variant through ``submit`` (the path of ``submit --dump``)."""
    settings = Settings(itunes_url=server.url, deezer_url=server.url, broker_url=redis_url,
                        sources=("itunes", "deezer"),
                        itunes_rate_per_min=ITUNES_PER_MIN * factor,
                        deezer_rate_per_s=DEEZER_PER_S * factor, queue_high_water=10**9,
                        store=str(tmp / f"store-{variant.replace(' ', '-')}"))
    client = connect(redis_url, decode=False, retry=False)
    client.flushdb()  # no cached answers, fresh limiters, no runs
    runs = Runs.from_url(redis_url)
    store = open_store(settings.store)
    run_id = f"bench-{variant.replace(' ', '-').replace(',', '')}"
    handled = None if variant == "dump order, no skip" else (
        lambda ids: runs.handled(run_id, ids))
    resolver = Resolver.build(settings, redis_client=client, need_musicbrainz=False,
                              stored=lambda rid: False, handled=handled)
    resolver.busy_s = BUSY_S / factor
    started = time.perf_counter()
    plan = None
    plan_s = 0.0
    if variant.startswith("coverage plan"):
        plan, _ = make_plan(dump, weighted="unweighted" not in variant)
        plan_s = time.perf_counter() - started
    items = resolver.resolve_dump(dump, plan=plan) if plan else resolver.resolve_dump(dump)
    report = submit(items, settings, queue="batch", runs=runs, run_id=run_id, store=store,
                    cursor_name=f"bench:{run_id}")
    wall = time.perf_counter() - started
    calls = resolver.calls
    total = calls.get("itunes", 0) + calls.get("deezer", 0)
    queued = runs.status(run_id).counts["queued"]
    findable = sum(bool(v) for v in cat.truth.values())
    return {"variant": variant, "calls": {"itunes": calls.get("itunes", 0),
                                         "deezer": calls.get("deezer", 0)},
            "calls_total": total, "recordings_queued": queued,
            "calls_per_resolved": round(total / max(1, queued), 4),
            "releases_skipped": resolver.stats["releases_skipped"],
            "tracks_known": resolver.stats["recordings_known"],
            "in_run": report.in_run, "recall_of_findable": round(queued / max(1, findable), 4),
            "plan": plan.meta() if plan else None, "plan_s": round(plan_s, 2),
            "wall_s": round(wall, 2)}


def order_section(args: argparse.Namespace, mix: Mix) -> list[dict[str, Any]]:
    cat = make_catalog(args.releases, mix, args.seed)
    lines = add_overlap(cat, args.seed, args.p_reissue, args.p_compilation)
    refs = sum(len(t) for rel in lines for t in (
        [tr for m in rel["media"] for tr in m["tracks"]],))
    print(f"\ndump order: {len(lines)} releases ({len(cat.releases)} albums, "
          f"{len(lines) - len(cat.releases)} reissues and compilations), {refs} tracks, "
          f"{len(cat.truth)} distinct recordings ({refs / len(cat.truth):.2f} tracks per "
          f"recording), {sum(bool(v) for v in cat.truth.values())} with a right answer")
    server = StoreServer(cat)
    out = []
    with LocalRedis() as redis, tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "release-overlap.gz"
        with gzip.open(dump, "wt", encoding="utf-8") as fh:
            for rel in lines:
                fh.write(json.dumps(rel) + "\n")
        for variant in ("dump order, no skip", "dump order", "coverage plan, unweighted",
                        "coverage plan"):
            out.append(run_order(variant, cat, server, redis.url, args.factor, dump,
                                 Path(tmp)))
            print(json.dumps(out[-1], ensure_ascii=False), flush=True)
    server.stop()
    base = out[0]["calls_total"]
    print("\n| order | iTunes calls | Deezer calls | calls | vs no skip | recordings queued "
          "| calls / queued recording | releases without a call | tracks not resolved again |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in out:
        print(f"| {r['variant']} | {r['calls']['itunes']} | {r['calls']['deezer']} | "
              f"{r['calls_total']} | {r['calls_total'] / max(1, base):.3f} | "
              f"{r['recordings_queued']} | {r['calls_per_resolved']:.3f} | "
              f"{r['releases_skipped']} | {r['tracks_known']} |")
    return out


def plan_scale(n: int, seed: int) -> dict[str, Any]:
    """Time and memory of planning a dump of ``n`` releases (8–13 tracks, 30 % of them
    reissues of an earlier release, 10 % compilations of 12 earlier tracks), written
    gzipped to a temporary folder; run in a child process so its peak RSS is its own."""
    import subprocess

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "release.gz"
        refs = 0
        with gzip.open(dump, "wt", encoding="utf-8", compresslevel=1) as fh:
            next_rec = 0
            for k in range(n):
                roll = rng.random()
                if roll < 0.3 and k:
                    first = rng.randrange(max(1, next_rec - 13))
                    ids = list(range(first, first + rng.randint(8, 13)))
                elif roll < 0.4 and next_rec > 12:
                    ids = rng.sample(range(next_rec), 12)
                else:
                    ids = list(range(next_rec, next_rec + rng.randint(8, 13)))
                    next_rec += len(ids)
                refs += len(ids)
                tracks = [{"position": i + 1, "title": "t", "recording": {
                    "id": f"{r:08x}-0000-4000-8000-000000000000", "title": "t"}}
                    for i, r in enumerate(ids)]
                fh.write(json.dumps({"id": f"rel-{k}", "title": "x", "artist-credit": [],
                                     "media": [{"position": 1, "tracks": tracks}]}) + "\n")
        code = ("import json, resource, sys, time; sys.path.insert(0, ROOT); "
                "from producers.plan import make_plan; t = time.perf_counter(); "
                "c = time.process_time(); p, _ = make_plan(DUMP); "
                "print(json.dumps({'wall_s': round(time.perf_counter() - t, 1), "
                "'cpu_s': round(time.process_time() - c, 1), 'cover': p.cover_releases, "
                "'recordings': p.recordings, 'bitmap_bytes': len(p.cover), "
                "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))"
                ).replace("ROOT", repr(str(ROOT))).replace("DUMP", repr(str(dump)))
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True).stdout
        result = json.loads(out)
        result.update(releases=n, track_refs=refs, dump_bytes=dump.stat().st_size)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--releases", type=int, default=150)
    ap.add_argument("--factor", type=float, default=60.0,
                    help="published limits sped up by this factor (waits are real)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--strategies", default="text-itunes,ids-itunes,ids-both",
                    help="comma-separated subset to run ('none': only --order)")
    ap.add_argument("--order", action="store_true",
                    help="also measure dump order vs the coverage plan on an overlap sample")
    ap.add_argument("--plan-releases", type=int, default=0,
                    help="only time and size the planning of a synthetic dump this large")
    ap.add_argument("--p-reissue", type=float, default=0.3,
                    help="--order: share of albums with a reissue/regional edition")
    ap.add_argument("--p-compilation", type=float, default=0.2,
                    help="--order: compilations per album")
    for name, value in Mix().__dict__.items():
        ap.add_argument(f"--p-{name.replace('_', '-')}", type=float, default=value)
    args = ap.parse_args()
    mix = Mix(**{k: getattr(args, "p_" + k) for k in Mix().__dict__})
    print(f"factor {args.factor:g}: iTunes {ITUNES_PER_MIN * args.factor:g} calls/min, "
          f"Deezer {DEEZER_PER_S * args.factor:g} calls/s (published: "
          f"{ITUNES_PER_MIN:g}/min, {DEEZER_PER_S:g}/s)")
    if args.plan_releases:
        print(json.dumps(plan_scale(args.plan_releases, args.seed)))
        return
    order = order_section(args, mix) if args.order else []
    if args.strategies == "none":
        if args.json:
            args.json.write_text(json.dumps({"factor": args.factor, "mix": mix.__dict__,
                                             "order": order}, indent=1))
        return
    cat = make_catalog(args.releases, mix, args.seed)
    print(f"catalogue: {len(cat.releases)} releases, {len(cat.truth)} recordings "
          f"({sum(bool(v) for v in cat.truth.values())} with a right answer); mix {mix}")
    server = StoreServer(cat)
    out = []
    with LocalRedis() as redis, tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "release.gz"
        with gzip.open(dump, "wt", encoding="utf-8") as fh:
            for rel in cat.releases:
                fh.write(json.dumps({**rel, "barcode": rel["barcode"]}) + "\n")
        text_dump = Path(tmp) / "release-text.gz"
        with gzip.open(text_dump, "wt", encoding="utf-8") as fh:
            for rel in cat.releases:  # today's path never used the barcode
                fh.write(json.dumps({**rel, "barcode": ""}) + "\n")
        for strategy, path in (("text-itunes", text_dump), ("ids-itunes", dump),
                               ("ids-both", dump)):
            if strategy not in args.strategies.split(","):
                continue
            out.append(run(strategy, cat, server, redis.url, args.factor, path))
            print(json.dumps(out[-1], ensure_ascii=False), flush=True)
        rerun = run("ids-both", cat, server, redis.url, args.factor, dump, stored=True)
        rerun["strategy"] = "ids-both, every recording stored"
        out.append(rerun)
        print(json.dumps(rerun, ensure_ascii=False), flush=True)
    server.stop()
    print("\n| strategy | iTunes calls/rec | Deezer calls/rec | calls/resolved | "
          "precision | recall | wrong | by rule | days for 35 M (calls) | (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in out:
        cpr = r["calls_per_recording"]
        rules = ", ".join(f"{k} {v:.0%}" for k, v in r["share_by_rule"].items())
        print(f"| {r['strategy']} | {cpr.get('itunes', 0):.3f} | {cpr.get('deezer', 0):.3f} "
              f"| {r['calls_per_resolved']:.3f} | {r['precision']:.4f} | {r['recall']:.3f} "
              f"| {r['wrong']} | {rules} | {r['projected_days_35M_by_calls']} | "
              f"{r['projected_days_35M_by_wall']} |")
    if args.json:
        args.json.write_text(json.dumps({"factor": args.factor, "mix": mix.__dict__,
                                         "results": out, "order": order}, indent=1))


if __name__ == "__main__":
    main()
