"""The ``previewvec`` command line, run as a real subprocess on real encoded audio."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from contract.layout import DESCRIPTOR_KEYS, VECTOR_DIM, feature_names
from previewvec.localredis import free_port
from testkit.encode import encode_audio
from testkit.songs import SongSpec, generate_song, render_synth
from workers.audio import SUPPORTED_FORMATS

SR = 44100


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "previewvec.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One 8 s generated song encoded in every supported format, plus bad inputs."""
    folder = tmp_path_factory.mktemp("cli")
    spec = SongSpec(7, 9, "minor", 110.0, True, "pop")
    score = generate_song(
        spec.seed,
        tonic=spec.tonic,
        mode=spec.mode,
        tempo_bpm=spec.tempo_bpm,
        drums=spec.drums,
        duration_s=8.0,
        style=spec.style,
    )
    audio = render_synth(score, sr=SR)
    paths = {}
    for fmt in SUPPORTED_FORMATS:
        path = folder / f"song.{fmt}"
        path.write_bytes(encode_audio(audio, SR, fmt))
        paths[fmt] = path
    (folder / "empty.m4a").write_bytes(b"")
    (folder / "page.m4a").write_bytes(b"<html><body>404 Not Found</body></html>")
    short = audio[:, : SR * 2]
    (folder / "short.wav").write_bytes(encode_audio(short, SR, "wav"))
    (folder / "silent.flac").write_bytes(encode_audio(np.zeros((2, SR * 8)), SR, "flac"))
    # Float WAVs whose samples are no audio level: written at integer scale, and finite
    # but so large that their spectra overflow (this one once ended the whole batch).
    soundfile.write(folder / "int_scale.wav", audio.T * 32767, SR, subtype="FLOAT")
    soundfile.write(folder / "huge.wav", audio.T * 1e18, SR, subtype="FLOAT")
    return folder, paths


def test_extract_prints_one_json_line_per_input_for_every_format(clips):
    _folder, paths = clips
    result = run_cli("extract", *[str(p) for p in paths.values()])
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["input"] for line in lines] == [str(p) for p in paths.values()]
    for line in lines:
        assert line["ok"] is True
        assert line["feature_version"] == "pv8"
        assert set(line["descriptors"]) == set(DESCRIPTOR_KEYS)
        assert len(line["vector"]) == VECTOR_DIM
        assert all(np.isfinite(line["vector"]))


def test_bad_inputs_get_their_codes_and_the_rest_still_run(clips):
    folder, paths = clips
    inputs = [
        folder / "empty.m4a",
        paths["m4a"],
        folder / "page.m4a",
        folder / "short.wav",
        folder / "silent.flac",
        folder / "huge.wav",
        folder / "int_scale.wav",
        folder / "missing.mp3",
    ]
    result = run_cli("extract", *[str(p) for p in inputs])
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    codes = [line["error"]["code"] if not line["ok"] else "ok" for line in lines]
    assert codes == ["empty_input", "ok", "undecodable", "too_short", "silent",
                     "invalid_signal", "invalid_signal", "unreadable"]
    for line in lines:
        if not line["ok"]:
            assert line["error"]["message"]
    assert "Traceback" not in result.stderr


def test_file_names_that_are_not_utf8_are_shown_escaped_in_valid_json_lines(clips):
    # A Latin-1 name (an old archive, a Samba share): sys.argv holds its byte as a lone
    # surrogate, which a strict UTF-8 stdout (en_US.UTF-8) could not write: the batch
    # ended in a traceback at that line, the inputs after it never ran.
    folder, paths = clips
    latin1 = os.fsencode(folder) + b"/caf\xe9.wav"
    with open(latin1, "wb") as out:
        out.write(paths["wav"].read_bytes())
    inputs = [latin1, os.fsencode(folder) + b"/gon\xe9.mp3", os.fsencode(paths["m4a"])]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "extract", *inputs],
                            capture_output=True, timeout=300, env=env)
    assert result.returncode == 1, result.stderr
    assert b"Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    assert [line["input"] for line in lines] == [
        f"{folder}/caf\\xe9.wav", f"{folder}/gon\\xe9.mp3", str(paths["m4a"])]
    assert [line["ok"] for line in lines] == [True, False, True]
    assert lines[1]["error"]["code"] == "unreadable"


def test_features_lists_every_dimension_in_order():
    result = run_cli("features")
    assert result.returncode == 0
    assert tuple(result.stdout.split()) == feature_names()


@pytest.mark.parametrize("command", [[], ["extract"], ["features"], ["demo"], ["flower"]])
def test_help_everywhere(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "usage:" in result.stdout


@pytest.mark.parametrize(
    "command",
    [["status", "some-run"], ["failures", "some-run"], ["retry", "some-run"],
     ["reduce"], ["enqueue", "-"]],
)
def test_commands_needing_redis_say_at_once_when_it_cannot_be_reached(command):
    # A closed loopback port: the command must not ride out ~30 s of reconnects and then
    # print a traceback; it names the URL (password masked) and exits 3.
    env = {**os.environ,
           "PREVIEWVEC_BROKER_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0"}
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", *command], input="",
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 3, result.stderr
    assert "cannot reach Redis at redis://:**@127.0.0.1:" in result.stderr
    assert "PREVIEWVEC_BROKER_URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_reduce_follow_waits_for_redis_instead_of_exiting():
    # The long-running reducer rides out outages, a broker not up yet included.
    env = {**os.environ, "PREVIEWVEC_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-m", "previewvec.cli", "reduce", "--follow"],
                       capture_output=True, text=True, timeout=8, env=env)


@pytest.mark.parametrize("command", [["similar", "rec-1", "-k", "0"],
                                     ["similar", "rec-1", "-k", "-3"],
                                     ["similar", "--audio", "f.wav", "-k", "0"],
                                     ["runs", "-n", "0"], ["runs", "-n", "-2"],
                                     ["runs", "-n", "many"]])
def test_counts_below_one_are_refused_as_arguments(command):
    """-k and -n count things to show: 0 or less is a usage error, said in one line
    (after argparse's usage), not a traceback, no output and success, or every run."""
    result = run_cli(*command, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert "must be at least 1" in result.stderr or "not an integer" in result.stderr


@pytest.mark.parametrize(("command", "needle"), [
    (["similar", "rec-1", "-k", "99999999999999999999"], "must be at most"),
    (["runs", "-n", "99999999999999999999"], "must be at most"),
    (["status", "some-run", "--watch", "--interval", "nan"], "--interval"),
    (["status", "some-run", "--watch", "--interval", "-1"], "--interval"),
    (["status", "some-run", "--watch", "--interval", "1e308"], "--interval"),
    (["similar", "rec-1", "--key", "H"], "--key"),
    (["api", "--port", "99999"], "--port"),  # an OverflowError from bind() before
    (["api", "--port", "-1"], "--port"),
    (["api", "--loglevel", "bogus"], "--loglevel"),  # uvicorn's KeyError before
    (["flower", "--port", "99999"], "--port"),
    (["worker", "--queues", "bogus"], "unknown queue 'bogus'"),  # a worker nothing reaches
    (["worker", "--concurrency", "-1"], "--concurrency"),  # Celery's own usage text before
    (["export", "out.parquet", "--threads", "-1"], "--threads"),
    (["export", "out.parquet", "--version", "../x"], "not a feature version"),
    (["show", "rec-1", "--version", "PV7"], "not a feature version"),
    (["export", ""], "an output file is needed"),  # "cannot write '': it is a folder"
    (["export", "exports/"], "names a folder"),
    (["export", "out.csv"], "export writes Parquet"),  # written as Parquet, silently
    (["export", "out.parquet", "--run", ""], "--run"),  # read as every run
    (["reindex", "--batch-size", "-1"], "--batch-size"),  # ran, and exited 0
    (["reduce", "--batch-size", "0"], "--batch-size"),
    (["resolve", "--query", "x", "--out", " "], "an output file is needed"),
])
def test_out_of_range_options_are_refused_as_arguments(command, needle):
    """A count too large for the index or Redis, a refresh interval time.sleep() refuses,
    a key no recording has: a usage error up front, not a traceback after the work
    started, nor a silent empty answer."""
    result = run_cli(*command, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert needle in result.stderr


@pytest.mark.parametrize(("login", "needle"), [
    ("", "FLOWER_BASIC_AUTH is empty"),
    ("   ", "FLOWER_BASIC_AUTH is empty"),
    ("admin", "no colon"),
    ("ops:secret,admin:", "no password"),
    (":secret", "not user:password"),
])
def test_flower_with_a_login_nobody_can_give_exits_2(login, needle):
    """Given FLOWER_BASIC_AUTH empty (as .env.example and the example Secret ship it) or
    an entry that is not user:password, expect one line naming the variable and exit 2
    before Flower starts (Flower takes such a value and answers 401 to everyone); the
    value itself is never printed."""
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_AUTH"}
    env["FLOWER_BASIC_AUTH"] = login
    result = subprocess.run([sys.executable, "-m", "previewvec.cli", "flower"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("previewvec: "), result.stderr
    assert needle in lines[0]
    assert "secret" not in result.stderr


def test_flower_on_a_port_in_use_or_a_missing_db_folder_says_it_in_one_line(tmp_path):
    """Flower (Tornado) answered both with tracebacks; one line and exit 2 / 7 now."""
    import socket

    env = {k: v for k, v in os.environ.items() if k != "FLOWER_AUTH"}
    env["FLOWER_BASIC_AUTH"] = "ops:secret"
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        for args, status, needle in (
                (["--port", port], 2, "Address already in use"),
                (["--port", str(free_port()), "--db", str(tmp_path / "no" / "f.db")], 7,
                 "its folder does not exist")):
            result = subprocess.run([sys.executable, "-m", "previewvec.cli", "flower", *args],
                                    capture_output=True, text=True, timeout=60, env=env)
            assert result.returncode == status, result.stderr
            assert result.stderr.count("\n") == 1 and needle in result.stderr


def test_flower_runs_celery_flower_with_options_flower_knows():
    """Given a usable login, expect the command line of ``celery -A workers.app flower``
    with the port, the persistent state file and this deployment's options, each one an
    option Flower defines (a misspelt one would stop Flower at start)."""
    from flower.options import options

    from previewvec.cli import flower_argv, flower_login_problem

    assert flower_login_problem({"FLOWER_BASIC_AUTH": "ops:pw,admin:pw2"}) is None
    assert flower_login_problem({"FLOWER_AUTH": ".*@example.org"}) is None
    argv = flower_argv(5555, "/data/flower.db")
    assert argv[1:6] == ["-m", "celery", "-A", "workers.app", "flower"]
    assert {"--port=5555", "--persistent=True", "--db=/data/flower.db"} <= set(argv)
    for arg in argv[6:]:
        name = arg.lstrip("-").split("=", 1)[0].replace("_", "-")  # tornado spells "-"
        assert name in options._options, f"unknown Flower option {arg}"
    assert "--persistent=True" not in flower_argv(5555, None)
