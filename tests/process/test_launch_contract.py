"""One launch contract: every route gives the same placement on each reference machine.

Routes: ``--model auto``, ``family:size:quant``, ``--interactive`` (no TTY: the recommended
plan), an explicit ``.gguf`` path, and MLX on Apple Silicon. Machines: the 10 of
``docs/planner.md`` (``localswarm.hardware.synthetic``), simulated with ``LOCALSWARM_HARDWARE``.
The planned model is "cached" under its registry name as a file that is not a GGUF, so every
route plans from the registry's figures (as on a first run) and the ``.gguf`` route has a path. The binary is the FAKE llama-server (tests/fakes/fake_llama_server.py), which records its argv.

``python -m tests.process.test_launch_contract`` rewrites the table in ``docs/launch.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from localswarm import launch, provision
from localswarm.backends import mlx
from localswarm.config import load_settings
from localswarm.hardware.synthetic import reference_profiles
from localswarm.models.registry import load_registry
from localswarm.supervisor import supervisor as supervisor_mod
from localswarm.supervisor.supervisor import Supervisor
from tests.helpers import REPO, fake_binary

MACHINES = list(reference_profiles())
ROUTES = ("auto", "id", "interactive", "gguf")
DOC = REPO / "docs" / "launch.md"
BEGIN, END = "<!-- launch-table:begin -->", "<!-- launch-table:end -->"
COMMIT = "0" * 40


def _cache_as(ref, cache: Path, source: Path) -> Path:
    """Put ``source`` into the Hub cache layout under ``ref``'s repo and file name."""
    repo = cache / "models" / ("models--" + ref.hf_repo.replace("/", "--"))
    snap = repo / "snapshots" / (ref.revision if re.fullmatch(r"[0-9a-f]{40}", ref.revision) else COMMIT)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(snap.name)
    link = snap / ref.file
    if not link.exists():
        link.symlink_to(source)
    return link


def _setup(machine: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[object, Path]:
    profile = reference_profiles()[machine]
    host = tmp / "host.json"
    host.write_text(json.dumps(profile.to_dict()))
    monkeypatch.setenv("LOCALSWARM_HARDWARE", str(host))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may touch a network
    monkeypatch.setenv("LOCALSWARM_LLAMA_SERVER", str(fake_binary(tmp)))
    cores = profile.cpu.logical_cores or 1
    monkeypatch.setattr(supervisor_mod, "available_cores", lambda: cores)  # the simulated host's cores
    settings = load_settings({"ctx_size": 4096, "parallel": 2})
    planned = provision.make_plan("auto", instances=None, ctx=4096, parallel=2)
    gguf = None
    if not planned.embedded:
        stand_in = tmp / "not-a-gguf.bin"
        stand_in.write_bytes(b"not a GGUF header: the planner uses the registry's figures")
        gguf = _cache_as(load_registry().resolve(planned.model_id), Path(os.environ["LOCALSWARM_CACHE_DIR"]),
                         stand_in)
    return settings, gguf


def _route(route: str, settings, gguf: Path | None):
    spec = {"auto": "auto", "interactive": "auto", "gguf": str(gguf) if gguf else None}.get(route)
    if route == "id":
        spec = provision.make_plan("auto", instances=None, ctx=4096, parallel=2).model_id
    if spec is None:
        return None
    return provision.resolve_model(spec, ctx=4096, parallel=2, interactive=route == "interactive", progress=False)


def _placement(argv: list[str]) -> list[str]:
    """The argv with the model path and alias (the only route-dependent values) masked."""
    out = list(argv[1:])
    for flag in ("-m", "--alias"):
        i = out.index(flag)
        out[i + 1] = "<" + flag.strip("-") + ">"
    return out


def _argvs(machine: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    settings, gguf = _setup(machine, tmp, monkeypatch)
    out = {}
    for route in ROUTES:
        model = _route(route, settings, gguf)
        if model is not None:
            out[route] = launch.instance_argvs(settings, model, port=8080)
    return out


@pytest.mark.parametrize("machine", MACHINES)
def test_every_route_gives_the_same_placement(machine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argvs = _argvs(machine, tmp_path, monkeypatch)
    auto = argvs["auto"]
    profile = reference_profiles()[machine]
    for route, got in argvs.items():
        assert [_placement(a) for a in got] == [_placement(a) for a in auto], f"{machine}: {route} differs from auto"
        assert {a[0] for a in got} == {os.environ["LOCALSWARM_LLAMA_SERVER"]}  # one binary for every route
    # What the placement must be, from the hardware alone.
    n = len(auto)
    for a in auto:
        def flag(name: str, argv: list[str] = a) -> str | None:
            return argv[argv.index(name) + 1] if name in argv else None

        assert flag("-ngl") == ("0" if profile.kind.value == "cpu-only" else "999")
        assert flag("-t") == flag("-tb") == str(max(1, (profile.cpu.logical_cores or 1) // n))
        # the plan's slots and context per slot (issue 13's fill, issue 14's phone 2048)
        planned = provision.make_plan("auto", instances=None, ctx=4096, parallel=2)
        assert flag("-np") == str(planned.parallel) and flag("-c") == str(planned.ctx * planned.parallel)
        assert planned.parallel >= 2 and (planned.ctx >= 4096 or profile.kind.value == "mobile")
        assert (flag("--main-gpu") is not None) == bool(profile.discrete_gpus)
    if len(profile.discrete_gpus) > 1:  # instances spread over the GPUs, each pinned to one
        assert {a[a.index("--main-gpu") + 1] for a in auto} == {str(g.index) for g in profile.discrete_gpus}


@pytest.mark.parametrize("machine", [m for m in MACHINES if m.startswith("Apple")])
def test_mlx_route_keeps_the_plan(machine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = _setup(machine, tmp_path, monkeypatch)
    monkeypatch.setattr(mlx, "mlx_available", lambda: True)
    monkeypatch.setattr(mlx, "is_apple_silicon", lambda: True)
    fetched: list[str] = []
    monkeypatch.setattr(mlx, "prefetch", lambda repo, **kw: fetched.append(repo) or str(tmp_path / "weights"))
    auto = provision.resolve_model("auto", ctx=4096, parallel=2, progress=False)
    if mlx.mlx_repo_for(auto.model_id) is None:
        pytest.skip(f"no MLX build of {auto.model_id}")
    assert auto.backend == "mlx"
    argvs = launch.instance_argvs(settings, auto, port=8080)
    plan = provision.make_plan("auto", instances=None, ctx=4096, parallel=2)
    assert len(argvs) == plan.instances
    assert fetched == [mlx.mlx_repo_for(auto.model_id)]  # weights fetched once, before any instance
    assert all(a[1:] == ["-m", "mlx_lm.server", "--model", str(tmp_path / "weights"), "--host", "127.0.0.1",
                         "--port", "8080", "--max-tokens", "4096"] for a in argvs)


def test_the_supervisor_starts_exactly_the_contract_fake_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FAKE llama-server records what it was really started with: the same argv as the contract."""
    machine = "2x RTX 4090 24 GB"
    settings, gguf = _setup(machine, tmp_path, monkeypatch)
    log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_ARGV_LOG", str(log))
    model = provision.resolve_model(str(gguf), instances=2, ctx=4096, parallel=2, progress=False)
    backend = launch.build_backend(settings, model)
    want = launch.instance_argvs(settings, model, backend)

    async def run() -> None:
        sup = Supervisor(backend, instances=2, log_dir=tmp_path / "logs",
                         instance_args=launch.device_args(model.devices))
        sup.start()
        try:
            assert await sup.wait_ready(30, all_=True)  # both started and recorded, not just the first
        finally:
            await sup.stop()

    asyncio.run(run())
    recorded = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda a: a[a.index("-s") + 1])
    assert len(recorded) == 2
    for got, exp in zip(recorded, want):
        port = got[got.index("--port") + 1]
        exp = [port if (i > 0 and exp[i - 1] == "--port") else x for i, x in enumerate(exp)]
        assert got[1:] == exp[1:]


# --- the table in docs/launch.md -------------------------------------------------------------------


def _short(argv: list[str]) -> str:
    keep = ("-c", "-np", "-t", "-tb", "-ngl", "--split-mode", "--main-gpu")
    parts = [f"{flag} {argv[i + 1]}" for i, flag in enumerate(argv) if flag in keep]
    return " ".join(parts)


def launch_table(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    rows = ["| machine | model (auto) | instances | per-instance flags (every route) |", "|---|---|---|---|"]
    for k, machine in enumerate(MACHINES):
        d = tmp / f"m{k}"
        (d / "cache").mkdir(parents=True)
        monkeypatch.setenv("LOCALSWARM_CACHE_DIR", str(d / "cache"))
        argvs = _argvs(machine, d, monkeypatch)["auto"]
        alias = argvs[0][argvs[0].index("--alias") + 1]
        flags = "<br>".join(f"`{_short(a)}`" for a in argvs)
        rows.append(f"| {machine} | {alias} | {len(argvs)} | {flags} |")
    return "\n".join(rows)


def test_docs_launch_md_shows_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text()
    table = launch_table(tmp_path, monkeypatch)
    current = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
    assert current == table, "docs/launch.md is stale: run `python -m tests.process.test_launch_contract`"


if __name__ == "__main__":  # rewrite the table in docs/launch.md
    import tempfile

    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory() as t:
        table = launch_table(Path(t), mp)
    mp.undo()
    text = DOC.read_text()
    DOC.write_text(text[:text.index(BEGIN) + len(BEGIN)] + "\n" + table + "\n" + text[text.index(END):])
    sys.stdout.write(table + "\n")
