"""Structured log formatters, instance-log rotation, and `localswarm logs` reading."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from localswarm import paths
from localswarm.errors import LocalSwarmError
from localswarm.logs import (
    JSONFormatter,
    KeyValueFormatter,
    iter_tail,
    log_files,
    redirect_stdout_handlers,
    rotate_if_needed,
    setup_logging,
    tail_logs,
)


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("localswarm.gateway", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_formatter_one_object_per_line_with_extras():
    line = JSONFormatter().format(_record("vote on %s", "req-1", instance="inst-0", confidence=0.5))
    data = json.loads(line)
    assert "\n" not in line
    assert data["level"] == "warning" and data["logger"] == "localswarm.gateway"
    assert data["msg"] == "vote on req-1" and data["instance"] == "inst-0" and data["confidence"] == 0.5
    assert data["ts"].endswith("+00:00")


def test_json_formatter_keeps_tracebacks_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JSONFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_key_value_formatter_quotes_what_needs_quoting():
    line = KeyValueFormatter().format(_record('said "hi" to %s', "you", instance="inst-1", empty=""))
    assert ' level=warning logger=localswarm.gateway msg="said \\"hi\\" to you" instance=inst-1 empty=""' in line


def test_setup_logging_replaces_its_own_handler():
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        setup_logging("info", fmt="json", stream=io.StringIO())
        setup_logging("info", fmt="json", stream=stream)
        ours = [h for h in root.handlers if getattr(h, "_localswarm", False)]
        assert len(ours) == 1
        logging.getLogger("localswarm.test").info("hello", extra={"port": 1})
        assert json.loads(stream.getvalue())["port"] == 1
        with pytest.raises(ValueError):
            setup_logging(fmt="xml")
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)


def test_redirect_stdout_handlers_moves_only_stdout():
    lg = logging.getLogger("localswarm.test.redirect")
    to_stdout, to_other = logging.StreamHandler(sys.stdout), logging.StreamHandler(io.StringIO())
    lg.addHandler(to_stdout)
    lg.addHandler(to_other)
    try:
        assert redirect_stdout_handlers() >= 1
        assert to_stdout.stream is sys.stderr and to_other.stream is not sys.stderr
    finally:
        lg.removeHandler(to_stdout)
        lg.removeHandler(to_other)


def test_rotate_if_needed_shifts_backups_and_drops_the_oldest(tmp_path):
    log = tmp_path / "inst-0.log"
    assert rotate_if_needed(log, 10, 2) is False  # missing file
    for generation in ("first", "second", "third"):
        log.write_text(generation * 5)
        assert rotate_if_needed(log, 10, 2) is True
    assert not log.exists()
    assert (tmp_path / "inst-0.log.1").read_text() == "third" * 5
    assert (tmp_path / "inst-0.log.2").read_text() == "second" * 5
    assert not (tmp_path / "inst-0.log.3").exists()
    log.write_text("small")
    assert rotate_if_needed(log, 10, 2) is False and log.read_text() == "small"
    log.write_text("x" * 20)
    assert rotate_if_needed(log, 10, 0) is True and not log.exists()


def _logs(root: Path) -> None:
    (root / "logs").mkdir(parents=True)
    (root / "gateway.log").write_text("".join(f"gw {i}\n" for i in range(5)))
    for name in ("inst-10", "inst-2", "inst-0"):
        (root / "logs" / f"{name}.log").write_text("".join(f"{name} line {i}\n" for i in range(100)))
    (root / "logs" / "inst-0.log.1").write_text("old\n")  # backups are not current logs


def test_log_files_gateway_first_then_instances_in_numeric_order():
    root = paths.state_dir()
    _logs(root)
    assert list(log_files()) == ["gateway", "inst-0", "inst-2", "inst-10"]


def test_tail_last_lines_of_one_or_all_logs():
    _logs(paths.state_dir())
    out = io.StringIO()
    assert tail_logs("inst-2", lines=3, out=out) == 3
    assert out.getvalue().splitlines() == ["inst-2 line 97", "inst-2 line 98", "inst-2 line 99"]
    out = io.StringIO()
    tail_logs("0", lines=1, out=out)  # a bare number means inst-N
    assert out.getvalue() == "inst-0 line 99\n"
    out = io.StringIO()
    tail_logs(lines=2, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "gateway | gw 3" and lines[-1] == "inst-10 | inst-10 line 99" and len(lines) == 8
    with pytest.raises(LocalSwarmError, match="inst-0, inst-2"):
        tail_logs("inst-7")


def test_tail_reads_large_files_from_the_end(tmp_path):
    (tmp_path / "logs").mkdir()
    big = tmp_path / "logs" / "inst-0.log"
    big.write_text("".join(f"{i:08d}\n" for i in range(200_000)))  # 1.8 MB
    assert [line for _, line in iter_tail("inst-0", 2, state_dir=tmp_path)] == ["00199998", "00199999"]


def test_follow_sees_appends_rotation_and_new_instances(tmp_path):
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "inst-0.log"
    log.write_text("before\n")
    got: list[tuple[str, str]] = []
    stop = threading.Event()

    def reader() -> None:
        got.extend(iter_tail(None, 1, True, state_dir=tmp_path, poll=0.02, should_stop=stop.is_set))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()

    def wait_for(item: tuple[str, str]) -> None:
        deadline = time.monotonic() + 5
        while item not in got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert item in got, got

    wait_for(("inst-0", "before"))
    with open(log, "a") as f:
        f.write("appended\npart")
    wait_for(("inst-0", "appended"))
    with open(log, "a") as f:
        f.write("ial\n")
    wait_for(("inst-0", "partial"))
    with open(log, "a") as f:
        f.write("x" * 50 + "\n")
    wait_for(("inst-0", "x" * 50))
    assert rotate_if_needed(log, 10, 1)
    log.write_text("after rotation\n")
    wait_for(("inst-0", "after rotation"))
    (tmp_path / "logs" / "inst-1.log").write_text("new worker\n")
    wait_for(("inst-1", "new worker"))
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    assert [line for name, line in got if name == "inst-0"] == ["before", "appended", "partial", "x" * 50,
                                                                "after rotation"]


ROTATING_CHILD = r"""
import logging, os, sys
from localswarm.logs import RotatingOutput, setup_logging
out = RotatingOutput(sys.argv[1], max_bytes=int(sys.argv[2]), backups=int(sys.argv[3])).install()
setup_logging("info")  # a handler on sys.stderr, as `up` does after installing it
log = logging.getLogger("localswarm")
for i in range(400):
    log.info("line %04d %s", i, "x" * 40)
    print(f"print {i:04d}")
    if i % 50 == 0:
        os.write(2, f"c-level {i:04d}\n".encode())  # below Python: follows the rotation too
log.info("the last line")
"""


def test_rotating_output_bounds_a_detached_swarms_log(tmp_path):
    """stdout, stderr, logging and raw fd writes all land in one file that rotates by size."""
    import subprocess
    import sys

    tmp_path = tmp_path / "state"
    tmp_path.mkdir()
    path = tmp_path / "gateway.log"
    done = subprocess.run([sys.executable, "-c", ROTATING_CHILD, str(path), "4096", "2"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # nothing escaped to the original stdout/stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gateway.log", "gateway.log.1", "gateway.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size < 4096 + 200, p  # one line past the limit at most
        assert p.stat().st_mode & 0o777 == 0o600, p
    text = (tmp_path / "gateway.log.2").read_text() + (tmp_path / "gateway.log.1").read_text() + path.read_text()
    assert text.rstrip().endswith("the last line")
    assert "print 0399" in text and "c-level 0350" in text
    assert "line 0000" not in text  # the oldest output was rotated away: the total stays bounded


def test_detached_up_gets_a_rotated_log_file(tmp_path, monkeypatch):
    """runner.detach passes --log-file; `up --log-file` installs RotatingOutput with the settings' sizes."""
    import subprocess
    import sys

    log = tmp_path / "gateway.log"
    log.write_text("x" * 5000)
    # A configuration error after the log is set up: the message lands in the (rotated) log, nowhere else.
    done = subprocess.run([sys.executable, "-m", "localswarm", "up", "--log-file", str(log), "--log-max-bytes",
                           "4096", "--log-backups", "1", "--model", "/nonexistent.gguf", "--port", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert (tmp_path / "gateway.log.1").read_text() == "x" * 5000
    assert "nonexistent" in log.read_text() and done.stderr == ""


def test_query_redactor_blanks_query_values_in_access_lines():
    import logging

    from localswarm.logs import QueryRedactor

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/v1/models?api_key=s3cret&x=1&flag", "1.1", 401), None)
    assert QueryRedactor().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /v1/models?api_key=***&x=***&flag=*** HTTP/1.1" 401'
    plain = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s %s %s", ("a", "GET", "/health"), None)
    assert QueryRedactor().filter(plain) and plain.getMessage() == "a GET /health"
