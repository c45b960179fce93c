"""The first `localswarm up` calibrates this machine's speed once; the next reuses the cache.

Through the user's path (`python -m localswarm up --model auto`) with the FAKE llama-server
(tests/fakes/fake_llama_server.py, not llama.cpp: it serves `/completion` with llama-server's
`timings`, rates from FAKE_PROMPT_TPS / FAKE_DECODE_TPS). The suite turns the automatic
calibration off (tests/conftest.py); this test turns it on. Offline and nothing cached, the
plan falls back to the embedded model, as a first offline run does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from localswarm.models.calibrate import CACHE_FILE
from localswarm.supervisor.supervisor import available_cores
from tests.helpers import fake_binary, free_tcp_port


def _up(env: dict[str, str], log: Path) -> str:
    port = free_tcp_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "localswarm", "up", "--model", "auto",
                                 "--instances", "1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/localswarm/status", timeout=2).json().get("ready"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_first_up_calibrates_once_then_reuses(tmp_path: Path) -> None:
    argv_log = tmp_path / "argv.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOCALSWARM_AUTO_CALIBRATE": "1",
           "LOCALSWARM_LLAMA_SERVER": str(fake_binary(tmp_path)), "FAKE_ARGV_LOG": str(argv_log),
           "FAKE_PROMPT_TPS": "180", "FAKE_DECODE_TPS": "30"}
    first = _up(env, tmp_path / "up1.log")
    lines = [ln for ln in first.splitlines() if "calibrated this machine's cpu once" in ln]
    assert len(lines) == 1, first
    seconds = float(lines[0].split(" once in ")[1].split(" s")[0])
    assert seconds < 30  # seconds, not minutes (a fake server: the cost is starting it)
    cache = Path(env["LOCALSWARM_CACHE_DIR"]) / CACHE_FILE
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["device"] == "cpu" and "prefill 180 tok/s" in entry["source"]
    calibration_starts = [a for a in map(json.loads, argv_log.read_text().splitlines()) if "--alias" not in a]
    # one calibration: its server, the two sharing the cores, the 1- and 2-thread decode (2 cores or more)
    assert len(calibration_starts) == (5 if available_cores() >= 2 else 1)
    assert all(a[a.index("-ngl") + 1] == "0" for a in calibration_starts)

    second = _up(env, tmp_path / "up2.log")
    assert "calibrated this machine" not in second
    assert len([a for a in map(json.loads, argv_log.read_text().splitlines())
                if "--alias" not in a]) == len(calibration_starts)
