"""Calibration: this machine's prefill and decode rates, measured through real llama-server.

``localswarm detect --calibrate`` (and the first ``up``) starts the binary with the embedded
SmolLM2, sends one ``/completion`` of :data:`CAL_PROMPT_TOKENS` token ids with
``n_predict`` :data:`CAL_OUTPUT_TOKENS` and reads llama-server's own ``timings``
(``prompt_per_second``, ``predicted_per_second``). The rates are turned into effective
device figures (:func:`localswarm.models.speed.device_from_measurement`) and cached in
``<cache dir>/speed-calibration.json`` per machine and per binary (path, size, mtime).

On a CPU with two cores or more it then runs the first request on two servers at once, the
threads split between them as ``up`` splits them: how much each slows down when two
instances share the CPU (one 2-thread llama-server on this 2-core VM decodes only 1.5x as
fast as a 1-thread one, so two instances lose far less than half each); and a short decode on
one thread and on two, whose difference is what the threads spend meeting at each node of the
graph (it weighs on a small model, with many small matrices, far more than on a large one).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from ..errors import LocalSwarmError
from ..hardware.types import HardwareProfile
from ..paths import cache_dir
from .gguf_meta import read_gguf_meta
from .speed import (
    UNIFORM,
    DeviceSpeed,
    KernelRates,
    ModelCost,
    cost_from_meta,
    cpu_kernels,
    device_from_measurement,
)

CAL_PROMPT_TOKENS = 256
CAL_OUTPUT_TOKENS = 32
#: a second request extends the first prompt (its prefix comes from the slot's cache) so
#: decode is also timed deeper into the context: attention's share of decode grows with it
CAL_FOLLOW_UP_TOKENS = 512
CAL_CTX = 4096
CACHE_FILE = "speed-calibration.json"


class CalibrationError(LocalSwarmError):
    """The calibration run could not be made (no binary, no model, server failed)."""


@dataclass(frozen=True)
class RunTimings:
    """llama-server's ``timings`` for one request."""

    prompt_n: int
    prompt_per_second: float
    predicted_n: int
    predicted_per_second: float

    @property
    def seconds(self) -> float:
        """Prompt plus generation time, as llama-server counted it."""
        return (self.prompt_n / self.prompt_per_second
                + self.predicted_n / self.predicted_per_second)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prompt_ids(n: int, vocab: int, salt: int = 0) -> list[int]:
    """``n`` deterministic token ids spread over the vocabulary (timing does not need text);
    another ``salt`` gives a prompt that shares no prefix with this one."""
    span = max(vocab - 1100, 1)
    return [1000 + (i * 7919 + salt * 104729) % span for i in range(n)]


def _device_flags(device: str) -> list[str]:
    """``cpu``: no layers offloaded; ``gpuN``: every layer on that GPU, as ``up`` pins it."""
    if device == "cpu":
        return ["-ngl", "0"]
    from ..launch import device_args

    return ["-ngl", "99", *device_args([device])[0]]


def _start(binary: Path, model: Path, threads: int, ctx: int,
           device: str = "cpu") -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    argv = [str(binary), "--host", "127.0.0.1", "--port", str(port), "-m", str(model),
            "-c", str(ctx), "-np", "1", "-t", str(threads), "-tb", str(threads),
            "--no-webui", *_device_flags(device)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], base: str, timeout: float) -> None:
    """Wait for a llama-server started here to answer /health; raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CalibrationError(f"llama-server exited with {proc.returncode} during calibration")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise CalibrationError(f"llama-server not ready after {timeout:.0f} s")


def complete(base: str, ids: list[int], n_predict: int, timeout: float = 600.0,
             cache_prompt: bool = False) -> RunTimings:
    """One ``/completion`` of token ids, exactly ``n_predict`` tokens; llama-server's timings."""
    r = httpx.post(base + "/completion", timeout=timeout, json={
        "prompt": ids, "n_predict": n_predict, "ignore_eos": True, "cache_prompt": cache_prompt,
        "temperature": 0.0, "seed": 1})
    if r.status_code != 200:
        raise CalibrationError(f"llama-server answered {r.status_code}: {r.text[:200]}")
    t = r.json()["timings"]
    return RunTimings(int(t["prompt_n"]), float(t["prompt_per_second"]),
                      int(t["predicted_n"]), float(t["predicted_per_second"]))


@contextmanager
def servers(binary: Path, model: Path, *, instances: int = 1, threads: int | None = None,
            ctx: int = CAL_CTX, ready_timeout: float = 120.0, device: str = "cpu",
            ) -> Iterator[list[str]]:
    """``instances`` ready llama-servers of ``model`` (the threads divided among them, as
    ``up`` does, one slot each); their base URLs. Every process is stopped on exit."""
    from ..supervisor.supervisor import threads_per_instance

    per = threads_per_instance(instances, threads)
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for _ in range(instances):
            procs.append(_start(binary, model, per, ctx, device))
        for proc, base in procs:
            wait_ready(proc, base, ready_timeout)
        yield [base for _, base in procs]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def at_once(bases: Sequence[str], ids: list[int], n_predict: int, *, timeout: float = 600.0,
            cache_prompt: bool = False) -> list[RunTimings]:
    """The same request sent to every server at the same time; their timings in order."""
    with ThreadPoolExecutor(max_workers=len(bases)) as pool:
        futures = [pool.submit(complete, base, ids, n_predict, timeout, cache_prompt)
                   for base in bases]
        return [f.result() for f in futures]


def calibration_round(base: str, vocab: int, salt: int = 0) -> tuple[RunTimings, RunTimings]:
    """The calibration's two requests to a running server (``salt``: a fresh prompt, so an
    earlier round's cache does not serve the first)."""
    first = complete(base, prompt_ids(CAL_PROMPT_TOKENS, vocab, salt), CAL_OUTPUT_TOKENS,
                     cache_prompt=True)
    deeper = complete(base, prompt_ids(CAL_PROMPT_TOKENS + CAL_FOLLOW_UP_TOKENS, vocab, salt),
                      CAL_OUTPUT_TOKENS, cache_prompt=True)
    return first, deeper


def device_from_timings(cost: ModelCost, t: RunTimings, deeper: RunTimings | None = None, *,
                        deeper_pos: float | None = None, sharing: int = 1,
                        source: str = "calibrated", kernels: KernelRates = UNIFORM,
                        node_seconds: float = 0.0) -> DeviceSpeed:
    """Whole-device effective rates from one instance's timings (times ``sharing``);
    ``deeper`` is the follow-up request whose decode ran at ``deeper_pos``."""
    # prefill: the follow-up's, a full 512-token batch past a cached prefix, as most of a
    # long prompt is processed (a 256-token batch is not what a 2,845-token turn runs)
    pre = deeper if deeper is not None and deeper_pos is not None else t
    pre_end = round(deeper_pos - deeper.predicted_n / 2) if pre is deeper else t.prompt_n  # type: ignore[operator, union-attr]
    d = device_from_measurement(
        cost, prompt_tokens=pre_end, prefill_start=pre_end - pre.prompt_n,
        prefill_tps=pre.prompt_per_second,
        decode_pos=t.prompt_n + t.predicted_n / 2, decode_tps=t.predicted_per_second,
        source=source, decode_pos2=deeper_pos if deeper else None,
        decode_tps2=deeper.predicted_per_second if deeper else None, kernels=kernels,
        node_seconds=node_seconds)
    return replace(d, flops=d.flops * sharing, bandwidth=d.bandwidth * sharing,
                   decode_attention_flops=d.decode_attention_flops * sharing)


def calibration_timings(binary: Path, model: Path, *, threads: int | None = None,
                        device: str = "cpu") -> tuple[RunTimings, RunTimings]:
    """The calibration's two requests on one server (all cores; all layers on ``device``)."""
    with servers(binary, model, threads=threads, device=device) as bases:
        return calibration_round(bases[0], read_gguf_meta(model).vocab_size or 32000)


def pair_timings(binary: Path, model: Path, *, threads: int | None = None,
                 salt: int = 0) -> list[RunTimings]:
    """The calibration's first request on two CPU servers at once, ``threads`` (all cores)
    split between them; empty on a single core (nothing to split)."""
    from ..supervisor.supervisor import available_cores

    if (threads or available_cores()) < 2:
        return []
    with servers(binary, model, instances=2, threads=threads) as bases:
        return at_once(bases, prompt_ids(CAL_PROMPT_TOKENS, read_gguf_meta(model).vocab_size or 32000,
                                         salt), CAL_OUTPUT_TOKENS)


SYNC_PROMPT_TOKENS = 16
SYNC_OUTPUT_TOKENS = 48


def sync_timings(binary: Path, model: Path, *, threads: int | None = None) -> list[RunTimings]:
    """A short decode on one thread, then on two: what meeting at every node costs the
    threads; empty on a single core."""
    from ..supervisor.supervisor import available_cores

    if (threads or available_cores()) < 2:
        return []
    ids = prompt_ids(SYNC_PROMPT_TOKENS, read_gguf_meta(model).vocab_size or 32000, salt=7)
    out = []
    for k in (1, 2):
        with servers(binary, model, threads=k) as bases:
            out.append(complete(bases[0], ids, SYNC_OUTPUT_TOKENS))
    return out


def node_seconds(cost: ModelCost, sync: Sequence[RunTimings]) -> float:
    """Per tensor of the model and per decoded token: how much longer a 2-thread decode
    took than half a 1-thread one (0 without the two runs)."""
    if len(sync) < 2 or not cost.tensors:
        return 0.0
    one, two = sync
    excess = 1.0 / two.predicted_per_second - 0.5 / one.predicted_per_second
    return max(excess, 0.0) / cost.tensors


def pair_slowdowns(alone: RunTimings, pair: Sequence[RunTimings]) -> dict[str, float]:
    """``pair_prefill``/``pair_decode`` for :class:`DeviceSpeed`: how many times slower the
    slower of two instances sharing the device ran than one alone (2 would be an even
    split; kept within 1..4). Empty without a pair run."""
    if not pair:
        return {}
    clamp = lambda x: min(max(x, 1.0), 4.0)  # noqa: E731
    return {"pair_prefill": clamp(alone.prompt_per_second / min(t.prompt_per_second for t in pair)),
            "pair_decode": clamp(alone.predicted_per_second / min(t.predicted_per_second for t in pair))}


CAL_DEEPER_POS = CAL_PROMPT_TOKENS + CAL_FOLLOW_UP_TOKENS + CAL_OUTPUT_TOKENS / 2


def device_from_calibration(model: Path, first: RunTimings, deeper: RunTimings, *,
                            source: str, kernels: KernelRates = UNIFORM,
                            pair: Sequence[RunTimings] = (),
                            sync: Sequence[RunTimings] = ()) -> DeviceSpeed:
    """Device rates from the calibration's two requests with ``model``, in units of the
    device's ``kernels``, with the slowdowns of the ``pair`` run (:func:`pair_timings`) and
    the threads' synchronisation from the ``sync`` runs (:func:`sync_timings`)."""
    cost = cost_from_meta(read_gguf_meta(model))
    speed = device_from_timings(cost, first, deeper, deeper_pos=CAL_DEEPER_POS, source=source,
                                kernels=kernels, node_seconds=node_seconds(cost, sync))
    return replace(speed, **pair_slowdowns(first, pair))


def kernels_of(profile: HardwareProfile, device: str) -> KernelRates:
    """The kernel table of one of this machine's devices: its CPU's on ``cpu``, else uniform."""
    return cpu_kernels(profile.cpu.arch) if device == "cpu" else UNIFORM


# --- the cache -------------------------------------------------------------------------


def machine_key(profile: HardwareProfile, binary: Path, device: str = "cpu") -> str:
    """Which machine, which binary and which of its devices a calibration belongs to."""
    try:
        st = binary.stat()
        bin_id = f"{binary.resolve()}:{st.st_size}:{int(st.st_mtime)}"
    except OSError:
        bin_id = str(binary)
    raw = json.dumps([profile.hostname or platform.node(), profile.cpu.model, profile.cpu.arch,
                      profile.cpu.physical_cores, profile.cpu.logical_cores, bin_id])
    key = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return key if device == "cpu" else f"{key}:{device}"


def _cache_path(directory: Path | None) -> Path:
    return (directory or cache_dir()) / CACHE_FILE


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached(profile: HardwareProfile, binary: Path, directory: Path | None = None,
           device: str = "cpu") -> DeviceSpeed | None:
    """The stored calibration of this machine, binary and device, if any."""
    entry = _read(_cache_path(directory)).get(machine_key(profile, binary, device))
    if not isinstance(entry, dict):
        return None
    if entry.get("kernels", UNIFORM.name) != kernels_of(profile, device).name:
        return None  # made against another kernel table: measure again
    try:
        return DeviceSpeed(float(entry["flops"]), float(entry["bandwidth"]), str(entry["source"]),
                           float(entry.get("decode_attention_flops") or 0.0),
                           str(entry.get("kernels", UNIFORM.name)),
                           float(entry.get("pair_prefill", 2.0)), float(entry.get("pair_decode", 2.0)),
                           float(entry.get("decode_node_seconds", 0.0)))
    except (KeyError, TypeError, ValueError):
        return None


def calibrate(profile: HardwareProfile, binary: Path, model: Path, *,
              directory: Path | None = None, threads: int | None = None,
              device: str = "cpu") -> DeviceSpeed:
    """Measure ``device`` of this machine with ``model`` through ``binary``; cache it."""
    t, deeper = calibration_timings(binary, model, threads=threads, device=device)
    pair = pair_timings(binary, model, threads=threads) if device == "cpu" else []
    sync = sync_timings(binary, model, threads=threads) if device == "cpu" else []
    where = "" if device == "cpu" else f" on {device}"
    shared = (f"; two instances at once: prefill {min(p.prompt_per_second for p in pair):.0f}, decode "
              f"{min(p.predicted_per_second for p in pair):.1f} tok/s each" if pair else "")
    speed = device_from_calibration(model, t, deeper, kernels=kernels_of(profile, device), pair=pair,
                                    sync=sync, source=(
        f"calibrated {time.strftime('%Y-%m-%d')} with {model.name}{where}: prefill "
        f"{t.prompt_per_second:.0f} tok/s ({t.prompt_n} tokens), {deeper.prompt_per_second:.0f} tok/s "
        f"(the next {deeper.prompt_n}), decode "
        f"{t.predicted_per_second:.1f} tok/s, {deeper.predicted_per_second:.1f} tok/s "
        f"at {CAL_DEEPER_POS:.0f} tokens{shared}"))
    path = _cache_path(directory)
    data = _read(path)
    data[machine_key(profile, binary, device)] = {
        **speed.to_dict(), "binary": str(binary), "model": str(model), "device": device,
        "measured_at": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return speed


def cached_or_calibrate(profile: HardwareProfile, binary: Path, model: Path, *,
                        directory: Path | None = None, threads: int | None = None,
                        ) -> DeviceSpeed:
    """The cached calibration, else a fresh one (the first ``up``)."""
    return cached(profile, binary, directory) or calibrate(
        profile, binary, model, directory=directory, threads=threads)


__all__: Sequence[str] = ("CalibrationError", "RunTimings", "cached", "cached_or_calibrate",
                          "calibrate", "machine_key", "machine_speeds", "servers", "at_once")

#: ``0`` turns off the calibration the first ``up`` makes (tests, scripted installs); the
#: planner then keeps the published figures / the conservative CPU default.
AUTO_ENV = "LOCALSWARM_AUTO_CALIBRATE"


def auto_calibration() -> bool:
    """Whether the first ``up`` may calibrate (:data:`AUTO_ENV` not set to ``0``)."""
    return os.environ.get(AUTO_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def drives_gpus(binary: Path) -> bool:
    """Whether ``binary`` drives any GPU (``--list-devices``): a CPU-only build told to put
    the layers on a GPU would measure the CPU."""
    from ..backends.binary import probe

    return bool(probe(binary, "calibration").devices)


def machine_speeds(profile: HardwareProfile, *, binary: Path | None = None,
                   calibrate_now: bool = False, directory: Path | None = None,
                   say: Callable[[str], None] | None = None) -> dict[str, DeviceSpeed]:
    """Device rates for the planner: this machine's cached calibrations (made now, once
    per machine, binary and device, when ``calibrate_now``), else the driver's or published
    peaks / the conservative CPU default.

    ``say`` gets one line when a calibration is made (``up`` prints it).
    """
    from ..backends.llama_server import find_llama_server
    from .registry import embedded_model_path
    from .speed import device_speeds

    measured: dict[str, DeviceSpeed] = {}
    try:
        binary = binary or find_llama_server()
        model = embedded_model_path()
        gpu_ok: bool | None = None
        for device in ["cpu", *(f"gpu{g.index}" for g in profile.gpus if g.discrete)]:
            speed = cached(profile, binary, directory, device)
            if speed is None and calibrate_now and model is not None and device != "cpu":
                gpu_ok = drives_gpus(binary) if gpu_ok is None else gpu_ok
                if not gpu_ok:
                    continue
            if speed is None and calibrate_now and model is not None:
                started = time.monotonic()
                try:
                    speed = calibrate(profile, binary, model, directory=directory, device=device)
                except CalibrationError as exc:
                    if say is not None:
                        say(f"speed calibration on {device} failed ({exc}): estimates use the prior")
                    continue
                if say is not None:
                    say(f"calibrated this machine's {device} once in {time.monotonic() - started:.1f} s "
                        f"(cached): prefill {speed.flops / 1e9:.0f} GFLOP/s, "
                        f"bandwidth {speed.bandwidth / 1e9:.1f} GB/s")
            if speed is not None:
                measured[device] = speed
    except Exception as exc:  # noqa: BLE001 - no binary or a failed run: the prior stands
        from ..hardware._run import logger

        logger.warning("speed calibration unavailable: %s", exc)
    return device_speeds(profile, measured.get("cpu"), measured)
