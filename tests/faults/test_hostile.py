"""The hostile input corpus, through a real worker: every case ends as a typed failure (or
a valid vector where the audio is legitimately decodable), and the worker survives.

Real components only: a private ``redis-server``, one ``celery -A workers.app worker``
(prefork, two pool children), the folder store, and a hostile HTTP server on 127.0.0.1
(:mod:`tests.faults.hostile_server`). Every input is generated here: songs from
:mod:`testkit.songs` encoded with :func:`testkit.encode.encode_audio`, PyAV for the
video containers, byte surgery for the broken ones. Each case is one job published to the
worker queue by task name exactly as a producer would — except that malformed jobs skip
the producer's validation, which is the point — and each case has its own run, so its
outcome is read from the run bookkeeping like any other.

Checked at the end: every case's outcome and code equals :data:`CASES`' expectation; every
``done`` case stored a record with a finite 530-dim vector; the queues are drained with
nothing unacknowledged; the worker and its pool children are the same processes as at the
start (nothing crashed or was recycled); the peak RSS of every pool child stayed below
:data:`RSS_CAP_BYTES`; and a normal job after the corpus still succeeds.

``pytest tests/faults/test_hostile.py -s`` prints the markdown table quoted in
docs/reliability.md.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.records import decode_record, record_key
from contract.settings import Settings
from producers.queue import TASK_NAME, make_client
from tests.faults.hostile_server import Behaviour, HostileServer
from tests.harness.pipeline import Pipeline, worker_cache_dir
from tests.media import many_channel_wavpack, mp4_video
from workers.app import MAX_MEMORY_PER_CHILD_KB

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

SR = 22_050
SONG_S = 8.0  # above the 5 s minimum, short enough that extraction is quick
# The same bound a production worker recycles its pool children at (workers/app.py).
RSS_CAP_BYTES = MAX_MEMORY_PER_CHILD_KB * 1024
FETCH_MAX_BYTES = 4_000_000  # the 10-minute MP3 (~2.4 MB) fits; the bombs do not
PIPELINE_ENV = {
    # Short fetch limits keep the endless and dripping bodies to a few seconds each.
    "PREVIEWVEC_FETCH_CONNECT_TIMEOUT_S": "2",
    "PREVIEWVEC_FETCH_READ_TIMEOUT_S": "1",
    "PREVIEWVEC_FETCH_TOTAL_TIMEOUT_S": "4",
    "PREVIEWVEC_FETCH_RETRIES": "2",
    "PREVIEWVEC_FETCH_MAX_BYTES": str(FETCH_MAX_BYTES),
}
CORPUS_TIMEOUT_S = 240.0  # a deadline against hangs, not a performance assertion
HTML_PAGE = (b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
             b"<body><h1>Service Unavailable</h1><p>Please try again later.</p></body>"
             b"</html>\n")


# --------------------------------------------------------------------------- media


@dataclass(frozen=True)
class Media:
    """Generated source signals, made once per module."""

    song: np.ndarray  # float32 (2, n) at SR, SONG_S long
    song_96k: np.ndarray  # float32 (2, n) at 96 kHz
    song_8k: np.ndarray  # float32 (n,) at 8 kHz, mono
    m4a: bytes = field(repr=False)
    mp3: bytes = field(repr=False)


def _render(seconds: float, sr: int, seed: int = 7) -> np.ndarray:
    from testkit.songs import generate_song, render_synth

    score = generate_song(seed, tonic=2, mode="minor", tempo_bpm=118.0, drums=True,
                          duration_s=seconds, style="pop")
    return render_synth(score, sr=sr)


def make_media() -> Media:
    from testkit.encode import encode_audio

    song = _render(SONG_S, SR)
    song_8k = _render(SONG_S, 8_000, seed=8).mean(axis=0)
    return Media(song=song, song_96k=_render(SONG_S, 96_000, seed=9), song_8k=song_8k,
                 m4a=encode_audio(song, SR, "m4a"), mp3=encode_audio(song, SR, "mp3"))


def float_wav(x: np.ndarray, sr: int, *, data_size: int | None = None) -> bytes:
    """32-bit float WAV; ``data_size`` overrides the declared RIFF/data chunk sizes."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    n_ch = x.shape[0]
    data = x.T.astype("<f4").tobytes()
    declared = len(data) if data_size is None else data_size
    fmt = struct.pack("<IHHIIHH", 16, 3, n_ch, sr, sr * 4 * n_ch, 4 * n_ch, 32)
    riff = min(0xFFFFFFFF, 36 + declared)
    return b"".join((b"RIFF", struct.pack("<I", riff), b"WAVEfmt ", fmt,
                     b"data", struct.pack("<I", declared), data))


def mp4_atom(data: bytes, kind: bytes) -> int:
    """Offset of the first atom of type ``kind`` (its size field), searched as bytes."""
    pos = data.find(kind)
    assert pos >= 4, f"no {kind!r} atom"
    return pos - 4


def corrupt_moov_size(data: bytes) -> bytes:
    """The ``moov`` atom claims to run ~4 GB past the end of the file."""
    out = bytearray(data)
    struct.pack_into(">I", out, mp4_atom(data, b"moov"), 0xFFFFFFF0)
    return bytes(out)


def corrupt_chunk_offsets(data: bytes) -> bytes:
    """Every ``stco`` chunk offset points 1 GB past the end of the file."""
    out = bytearray(data)
    pos = mp4_atom(data, b"stco")
    (count,) = struct.unpack_from(">I", out, pos + 12)
    for i in range(count):
        struct.pack_into(">I", out, pos + 16 + 4 * i, 0x40000000 + i)
    return bytes(out)


def corrupt_sample_sizes(data: bytes) -> bytes:
    """``stsz`` declares every sample 16 MB long (an allocation bomb for naive demuxers)."""
    out = bytearray(data)
    pos = mp4_atom(data, b"stsz")
    (uniform, count) = struct.unpack_from(">II", out, pos + 12)
    if uniform:
        struct.pack_into(">I", out, pos + 12, 0x01000000)
    else:
        for i in range(count):
            struct.pack_into(">I", out, pos + 20 + 4 * i, 0x01000000)
    return bytes(out)


def id3_only() -> bytes:
    """An ID3v2.4 tag (a title frame and 1 KB of padding) and no MPEG frames after it."""
    frame_body = b"\x03" + b"Preview"
    frame = b"TIT2" + struct.pack(">I", len(frame_body)) + b"\x00\x00" + frame_body
    tag = frame + bytes(1024)
    size = len(tag)
    synchsafe = bytes(((size >> s) & 0x7F) for s in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + synchsafe + tag


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """One hostile input: what is served (or the raw job), and the outcome it must have.

    ``expect`` is ``"done"`` or the stable error code. ``job`` overrides the job published
    (malformed jobs); otherwise the job is a valid one pointing at ``behaviour``.
    """

    name: str
    what: str
    expect: str
    behaviour: Behaviour | None = None
    url: str | None = None  # a fixed preview URL instead of a served path
    job: Callable[[str], Any] | None = None  # good clip URL → the raw job (malformed)
    served_ext: str = "m4a"


def _body(data: bytes, content_type: str = "audio/mp4") -> Behaviour:
    return Behaviour("body", body=data, content_type=content_type)


def raw_response(data: bytes) -> Behaviour:
    """Serve ``data`` byte for byte as the whole response, then hang up."""
    return Behaviour("raw", body=data)


def http_200(body: bytes, *, length: bytes | None = None, before: bytes = b"") -> bytes:
    """A ``200 OK`` response with ``body`` (``length``: the Content-Length to claim;
    ``before``: raw header lines before the others)."""
    claimed = str(len(body)).encode() if length is None else length
    return (b"HTTP/1.1 200 OK\r\n" + before + b"Content-Type: audio/mp4\r\nContent-Length: "
            + claimed + b"\r\nConnection: close\r\n\r\n" + body)


def build_cases(media: Media) -> list[Case]:
    from testkit.encode import encode_audio

    song, mono = media.song, media.song.mean(axis=0)
    rng = np.random.default_rng(5)
    ten_min = np.tile(mono, math.ceil(600 / SONG_S))[: 600 * SR]
    noise = np.clip(4.0 * rng.standard_normal(int(SONG_S * SR)), -1, 1)
    impulse = np.zeros(int(SONG_S * SR), dtype=np.float32)
    impulse[SR] = 1.0
    t = np.arange(int(SONG_S * SR)) / SR
    nan_song = song.copy()
    nan_song[0, SR::SR] = np.nan
    inf_song = song.copy()
    inf_song[1, 2 * SR] = np.inf
    m4a_gz = gzip.compress(media.m4a)
    six = np.stack([media.song_96k[i % 2] * (1 - 0.1 * i) for i in range(6)])

    def job_with(**changes: Any) -> Callable[[str], dict[str, Any]]:
        def make(url: str) -> dict[str, Any]:
            job = {"preview_url": url, "source": "hostile", **changes}
            return {k: v for k, v in job.items() if v is not _DROP}
        return make

    return [
        # --- transport and HTTP -------------------------------------------------------
        Case("zero-bytes", "HTTP 200 with an empty body", "fetch_failed", _body(b"")),
        Case("html-error-page", "an HTML error page served as audio/mp4", "undecodable",
             _body(HTML_PAGE)),
        Case("http-404", "HTTP 404", "http_404",
             Behaviour("body", status=404, body=b"gone", content_type="text/plain")),
        Case("http-503", "HTTP 503 on every attempt", "http_503",
             Behaviour("body", status=503, body=HTML_PAGE, content_type="text/html")),
        Case("content-length-10gb", "Content-Length: 10 GB, a few bytes, then a stall",
             "too_large", Behaviour("huge_length", body=media.m4a,
                                    declared_bytes=10_000_000_000)),
        Case("gzip-bomb", "Content-Encoding: gzip, 100 KB inflating to 100 MB",
             "fetch_failed", Behaviour("gzip_bomb")),
        Case("endless-chunked", "an endless chunked body at full speed", "too_large",
             Behaviour("endless_chunked")),
        Case("drip-body", "a chunked body dripping 64 B every 100 ms, for ever",
             "fetch_failed", Behaviour("drip_body")),
        Case("slowloris-headers", "headers that never end (1 B every 100 ms)",
             "fetch_failed", Behaviour("drip_headers")),
        Case("short-body", "a body 10 KB shorter than its Content-Length", "fetch_failed",
             Behaviour("short_body", body=media.m4a[:20_000])),
        Case("redirect-loop", "a redirect to itself", "fetch_failed",
             Behaviour("redirect", status=302, location="/hostile/redirect-loop.m4a")),
        Case("redirect-to-metadata", "302 to http://169.254.169.254/latest/meta-data/",
             "host_not_allowed",
             Behaviour("redirect", status=302,
                       location="http://169.254.169.254/latest/meta-data/")),
        Case("metadata-url", "a job whose preview URL is the cloud metadata service",
             "host_not_allowed", url="http://169.254.169.254/latest/meta-data/iam/"),
        Case("redirect-gzip-bomb", "a 302 to a good clip whose own body is a gzip bomb",
             "done", Behaviour("redirect_bomb", status=302, location="/good/song.m4a")),
        Case("redirect-endless-body", "a 302 to a good clip with an endless body of its own",
             "done", Behaviour("redirect_endless", status=302, location="/good/song.m4a")),
        Case("redirect-bracketed-ipv4", "302 to http://[127.0.0.1]/ (unparsable URL)",
             "fetch_failed", raw_response(b"HTTP/1.1 302 Found\r\n"
                                          b"Location: http://[127.0.0.1]/x.m4a\r\n"
                                          b"Content-Length: 0\r\n\r\n")),
        Case("early-hints", "103 Early Hints and 102 Processing before the 200", "done",
             raw_response(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                          b"HTTP/1.1 102 Processing\r\n\r\n"
                          + http_200(media.m4a))),
        Case("transfer-encoding-gzip", "Transfer-Encoding: gzip, chunked", "fetch_failed",
             raw_response(b"HTTP/1.1 200 OK\r\nContent-Type: audio/mp4\r\n"
                          b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                          + b"%x\r\n%s\r\n0\r\n\r\n" % (len(m4a_gz), m4a_gz))),
        Case("negative-content-length", "Content-Length: -1 and half the clip, then EOF",
             "fetch_failed",
             raw_response(http_200(media.m4a[: len(media.m4a) // 2],
                                   length=b"-1"))),
        Case("malformed-header-line", "a header line without a colon hides the "
             "Content-Length; half the clip", "fetch_failed",
             raw_response(http_200(media.m4a[: len(media.m4a) // 2],
                                   length=str(len(media.m4a)).encode(),
                                   before=b"X-Bad header\r\n"))),
        # --- containers and codecs -----------------------------------------------------
        Case("random-bytes", "200 KB of random bytes named .mp3", "undecodable",
             _body(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(), "audio/mpeg"),
             served_ext="mp3"),
        Case("truncated-aac", "the first 25 % of an 8 s AAC .m4a (2 s of audio)",
             "too_short", _body(media.m4a[: len(media.m4a) // 4])),
        Case("aac-header-only", "the first 600 bytes of an .m4a (moov, no audio data)",
             "undecodable", _body(media.m4a[:600])),
        # FFmpeg reads an over-long moov up to the end of the file; the audio is intact.
        Case("corrupt-moov-size", "moov atom declaring a size 4 GB past the end",
             "done", _body(corrupt_moov_size(media.m4a))),
        Case("corrupt-chunk-offsets", "every stco chunk offset 1 GB past the end",
             "undecodable", _body(corrupt_chunk_offsets(media.m4a))),
        Case("corrupt-sample-sizes", "stsz declaring every AAC frame 16 MB long",
             "undecodable", _body(corrupt_sample_sizes(media.m4a))),
        Case("id3-only-mp3", "an ID3v2 tag and no MPEG frames", "undecodable",
             _body(id3_only(), "audio/mpeg"), served_ext="mp3"),
        Case("video-no-audio", "an MPEG-4 video without an audio track", "no_audio_stream",
             _body(mp4_video(None, SR), "video/mp4"), served_ext="mp4"),
        Case("video-with-audio", "an MPEG-4 video with an 8 s AAC track", "done",
             _body(mp4_video(song, SR), "video/mp4"), served_ext="mp4"),
        Case("wrong-extension", "MP3 bytes served as .m4a / audio/mp4", "done",
             _body(media.mp3)),
        Case("wav-huge-declared", "WAV whose RIFF/data sizes declare 4 GB (8 s present)",
             "done", _body(float_wav(song, SR, data_size=0xFFFFFFF0), "audio/wav"),
             served_ext="wav"),
        # --- signals --------------------------------------------------------------------
        Case("half-second", "0.5 s of AAC", "too_short",
             _body(encode_audio(song[:, : SR // 2], SR, "m4a"))),
        Case("ten-minutes", "10 minutes of MP3 (analysis capped at 30 s)", "done",
             _body(encode_audio(ten_min, SR, "mp3", bitrate=32_000), "audio/mpeg"),
             served_ext="mp3"),
        Case("pure-silence", "8 s of digital silence (AAC)", "silent",
             _body(encode_audio(np.zeros((2, int(SONG_S * SR))), SR, "m4a"))),
        Case("dc-offset", "music at half scale on a +0.45 DC offset (WAV)", "done",
             _body(encode_audio(0.5 * song + 0.45, SR, "wav"), "audio/wav"),
             served_ext="wav"),
        Case("clipped-noise", "white noise at +12 dB, clipped to full scale (WAV)", "done",
             _body(encode_audio(noise, SR, "wav"), "audio/wav"), served_ext="wav"),
        Case("dc-only", "a constant +0.5 (float WAV): no signal but DC", "silent",
             _body(float_wav(np.full(int(SONG_S * SR), 0.5), SR), "audio/wav"),
             served_ext="wav"),
        # Audible (RMS -52 dBFS) and every feature is finite: a legitimate if odd vector.
        Case("single-impulse", "one full-scale sample in 8 s of zeros (float WAV)",
             "done", _body(float_wav(impulse, SR), "audio/wav"), served_ext="wav"),
        Case("pure-sine", "a steady 440 Hz sine (float WAV)", "done",
             _body(float_wav(0.5 * np.sin(2 * np.pi * 440 * t), SR), "audio/wav"),
             served_ext="wav"),
        Case("nan-samples", "float WAV with NaN samples", "undecodable",
             _body(float_wav(nan_song, SR), "audio/wav"), served_ext="wav"),
        Case("inf-samples", "float WAV with an infinite sample", "undecodable",
             _body(float_wav(inf_song, SR), "audio/wav"), served_ext="wav"),
        Case("8k-mono", "8 kHz mono WAV", "done",
             _body(encode_audio(media.song_8k, 8_000, "wav"), "audio/wav"), served_ext="wav"),
        Case("96k-6ch", "96 kHz 6-channel FLAC", "done",
             _body(encode_audio(six, 96_000, "flac"), "audio/flac"), served_ext="flac"),
        # 1.2 MB that would decode to 370 MB of float32 (30 s of it: 1.8 GB).
        Case("40ch-384k", "6 s of 40-channel 384 kHz WavPack (one tone, 39 silent)",
             "too_large", _body(many_channel_wavpack(40, 384_000, 6.0), "audio/x-wavpack"),
             served_ext="wv"),
        # --- malformed jobs (published raw, past the producer's validation) -----------
        Case("job-scheme-file", "preview_url file:///etc/passwd", "invalid_job",
             job=job_with(recording_id="job-scheme-file", preview_url="file:///etc/passwd")),
        Case("job-url-junk", "preview_url with a space and no scheme", "invalid_job",
             job=job_with(recording_id="job-url-junk", preview_url="exa mple/x.m4a")),
        Case("job-missing-url", "no preview_url", "invalid_job",
             job=job_with(recording_id="job-missing-url", preview_url=_DROP)),
        Case("job-missing-id", "no recording_id", "invalid_job", job=job_with()),
        Case("job-id-66-bytes", "recording_id of 33 × 'é' (66 bytes of UTF-8)",
             "invalid_job", job=job_with(recording_id="é" * 33)),
        Case("job-id-slash", "recording_id '../../etc/x' (a path)", "invalid_job",
             job=job_with(recording_id="../../etc/x")),
        Case("job-unknown-field", "an extra field 'callback_url'", "invalid_job",
             job=job_with(recording_id="job-unknown-field", callback_url="http://x/")),
        Case("job-wrong-types", "duration_ms 'long', force 'yes'", "invalid_job",
             job=job_with(recording_id="job-wrong-types", duration_ms="long", force="yes")),
        Case("job-lone-surrogate", "recording_id with a lone UTF-16 surrogate",
             "invalid_job", job=job_with(recording_id="bad-\ud800-id")),
        Case("job-not-an-object", "the job is a JSON string, not an object", "invalid_job",
             job=lambda url: f'{{"recording_id": "x", "preview_url": "{url}"}}'),
        Case("job-unicode-id", "a valid Unicode recording_id ('Beyoncé – Halo 🎵 日本')",
             "done", job=job_with(recording_id="Beyoncé – Halo 🎵 日本")),
    ]


_DROP = object()  # job_with(field=_DROP) leaves the field out


# --------------------------------------------------------------------------- fixtures


@dataclass
class Outcome:
    status: str  # done | skipped | failed
    code: str | None
    message: str
    recording_id: str | None


@pytest.fixture(scope="module")
def cache_dir(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    return worker_cache_dir(request, tmp_path_factory)


@pytest.fixture(scope="module")
def media() -> Media:
    return make_media()


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def pipeline(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("hostile")
    pipe = Pipeline(root, cache_dir=cache_dir, store=str(root / "store"),
                    extra_env=PIPELINE_ENV)
    try:
        yield pipe
    finally:
        pipe.close()


class RssSampler:
    """Samples the RSS of a worker's pool children every ``interval_s`` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.main = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                children = self.main.children()
            except psutil.Error:
                return
            for child in children:
                try:
                    rss = child.memory_info().rss
                except psutil.Error:
                    continue
                self.peak[child.pid] = max(self.peak.get(child.pid, 0), rss)
            self._stop.wait(self.interval_s)


# --------------------------------------------------------------------------- the test


def _publish(pipeline: Pipeline, cases: list[Case], server: HostileServer,
             good_url: str) -> dict[str, tuple[str, str]]:
    """Publish one job per case, each in its own run; returns name → (run id, task id)."""
    client = make_client(pipeline.settings)
    published: dict[str, tuple[str, str]] = {}
    for case in cases:
        run_id = f"hostile-{case.name}"
        pipeline.runs.create(run_id, queue="batch", source="hostile")
        if case.job is not None:
            job = case.job(good_url)
            if isinstance(job, dict):
                job["run_id"] = run_id
        else:
            url = case.url or server.add(f"/hostile/{case.name}.{case.served_ext}",
                                         case.behaviour)  # type: ignore[arg-type]
            job = {"recording_id": case.name, "preview_url": url, "source": "hostile",
                   "run_id": run_id}
            pipeline.runs.mark_many_queued(run_id, [case.name])
        result = client.send_task(TASK_NAME, args=[job], queue="batch")
        published[case.name] = (run_id, result.id)
    return published


_SUCCEEDED = re.compile(r"Task previewvec\.featurize\[(?P<id>[0-9a-f-]+)\] succeeded in "
                        r"[0-9.e-]+s: (?P<result>\{.*\})$", re.MULTILINE)


def _outcome(pipeline: Pipeline, run_id: str, task_id: str, log: str) -> Outcome | None:
    """The case's outcome from its run, or (for a job without a usable run id) from the
    task result the worker logged; None while it is still pending."""
    status = pipeline.runs.status(run_id)
    if status.total and not status.counts["queued"]:
        failures = list(pipeline.runs.failures(run_id))
        if failures:
            rid, entry = failures[0]
            return Outcome("failed", entry["code"], entry["message"], rid)
        state = pipeline.raw.hgetall(f"pv:run:{run_id}:state")
        (rid, final), = state.items()
        return Outcome(final, None, "", rid)
    for match in _SUCCEEDED.finditer(log):
        if match.group("id") == task_id:
            import ast

            result = ast.literal_eval(match.group("result"))
            return Outcome(result["status"], result.get("error_code"),
                           result.get("error_message", ""), result.get("recording_id"))
    return None


def markdown_table(cases: list[Case], outcomes: dict[str, Outcome]) -> str:
    rows = ["| case | input | outcome | code |", "|---|---|---|---|"]
    for case in cases:
        got = outcomes[case.name]
        rows.append(f"| `{case.name}` | {case.what} | {got.status} | "
                    f"{'`' + got.code + '`' if got.code else '—'} |")
    return "\n".join(rows)


def test_hostile_corpus_ends_in_typed_outcomes(pipeline: Pipeline, server: HostileServer,
                                               media: Media) -> None:
    cases = build_cases(media)
    assert len(cases) >= 25
    assert len({c.name for c in cases}) == len(cases)
    good_url = server.add_body("/good/song.m4a", media.m4a)

    worker = pipeline.start_worker("hostile", concurrency=2)
    worker.wait_warm(count=2)
    children_before = sorted(worker.pool_children())
    assert len(children_before) == 2

    outcomes: dict[str, Outcome] = {}
    with RssSampler(worker.pid) as rss:
        published = _publish(pipeline, cases, server, good_url)

        def all_settled() -> bool:
            log = worker.log()
            for name, (run_id, task_id) in published.items():
                if name not in outcomes:
                    got = _outcome(pipeline, run_id, task_id, log)
                    if got is not None:
                        outcomes[name] = got
            return len(outcomes) == len(cases)

        pipeline.wait_until(all_settled, timeout_s=CORPUS_TIMEOUT_S,
                            what=f"the corpus (pending: {set(published) - set(outcomes)})")

        # A normal job after the corpus still succeeds on the same worker.
        follow = pipeline.enqueue([json.dumps({"recording_id": "after-corpus",
                                               "preview_url": good_url})])
        final = pipeline.wait_run(follow.run_id, expected_total=1, timeout_s=120)
        assert final.counts["done"] == 1, final.counts

    print("\n" + markdown_table(cases, outcomes))
    peak = max(rss.peak.values())
    cpu = sum(sum(p.cpu_times()[:2]) for p in (rss.main, *rss.main.children()))
    print(f"\npeak pool-child RSS: {peak / 2**20:.0f} MiB over {len(rss.peak)} children "
          f"(cap {RSS_CAP_BYTES / 2**20:.0f} MiB); worker CPU (main + children, "
          f"warm-up included): {cpu:.1f} s for {len(cases) + 1} jobs")

    mismatched = {c.name: (c.expect, outcomes[c.name].status, outcomes[c.name].code,
                           outcomes[c.name].message)
                  for c in cases
                  if (outcomes[c.name].code or outcomes[c.name].status) != c.expect}
    assert not mismatched, json.dumps(mismatched, indent=1, ensure_ascii=False)

    for case in cases:
        got = outcomes[case.name]
        assert got.status in ("done", "failed"), (case.name, got)
        if got.status == "failed":
            assert got.message, case.name  # a readable message with every code
            continue
        record = decode_record(Path(pipeline.store_url, record_key(FEATURE_VERSION,
                                                                   got.recording_id))
                               .read_bytes())
        assert len(record.vector) == VECTOR_DIM, case.name
        assert all(math.isfinite(v) for v in record.vector), case.name
        if case.name == "ten-minutes":  # decoded only up to the analysis cap
            assert record.descriptors["duration_s"] == pytest.approx(
                Settings().max_duration_s, abs=0.05)

    # Nothing left behind: queues drained, nothing unacknowledged, the same processes.
    pipeline.wait_until(lambda: not pipeline.unacked(), timeout_s=30, what="acks")
    assert pipeline.queue_depth("batch") == 0 and pipeline.queue_depth("ondemand") == 0
    assert worker.alive()
    assert sorted(worker.pool_children()) == children_before, worker.log_tail()
    assert "Traceback" not in worker.log(), worker.log_tail(80)
    assert set(rss.peak) >= set(children_before)
    assert peak < RSS_CAP_BYTES, f"peak RSS {peak} bytes"
    # The metadata service and the redirect target were never contacted (only refused).
    assert server.hits("/hostile/redirect-to-metadata.m4a") == 1
