"""Human and JSON renderings of a :class:`HardwareProfile` (``localswarm detect``)."""

from __future__ import annotations

import io
import json
import json as _json
from typing import Any

from rich.console import Console
from rich.table import Table

from .budget import BudgetRules, budget
from .types import HardwareProfile

GiB = 1024**3


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GiB:.1f} GiB"


def hardware_table(profile: HardwareProfile, rules: BudgetRules | None = None) -> Table:
    """A rich :class:`Table` of the machine, its GPUs and the memory budget."""
    table = Table(title=f"{profile.hostname or 'this machine'} ({profile.kind.value})",
                  show_header=True, header_style="bold")
    table.add_column("Component")
    table.add_column("Details")
    table.add_row("OS", f"{profile.os} {profile.os_release}".strip())
    cores = f"{profile.cpu.physical_cores or '?'} cores / {profile.cpu.logical_cores or '?'} threads"
    if profile.cpu.performance_cores:
        cores += f", {profile.cpu.performance_cores} performance"
    table.add_row("CPU", f"{profile.cpu.model} ({profile.cpu.arch}), {cores}")
    table.add_row("RAM", f"{_gib(profile.ram_total)} total ({profile.ram_source}), "
                         f"{_gib(profile.ram_available)} available")
    if not profile.gpus:
        table.add_row("GPU", "none detected (CPU only)")
    for g in profile.gpus:
        bits = [f"{_gib(g.memory_total)} {'unified' if g.unified else 'VRAM'}"]
        if g.memory_free is not None:
            bits.append(f"{_gib(g.memory_free)} free")
        if g.driver:
            bits.append(f"driver {g.driver}")
        if g.compute_capability:
            bits.append(f"compute {g.compute_capability}")
        if g.backend_hint:
            bits.append(f"backend {g.backend_hint}")
        table.add_row(f"GPU {g.vendor}:{g.index}", f"{g.name}: " + ", ".join(bits))
    b = budget(profile, rules)
    for d in b.devices:
        table.add_row(f"Budget {d.device}", f"{_gib(d.usable)} of {_gib(d.capacity)} ({b.rule})")
    for note in (*profile.notes, *b.notes):
        table.add_row("Note", note)
    return table


def format_table(profile: HardwareProfile, rules: BudgetRules | None = None,
                 *, width: int = 100) -> str:
    """:func:`hardware_table` rendered to plain text."""
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(
        hardware_table(profile, rules))
    return buf.getvalue()


def to_json(profile: HardwareProfile, rules: BudgetRules | None = None) -> str:
    """The profile and its budget as indented JSON."""
    data = profile.to_dict()
    data["budget"] = budget(profile, rules).to_dict()
    return json.dumps(data, indent=2)


def detect_command(json: bool = False, rules: BudgetRules | None = None) -> str:  # noqa: A002
    """What ``localswarm detect [--json]`` prints: detect this machine and render it."""
    from .detect import detect

    profile = detect()
    server = llama_server_choice(profile)
    if json:
        data = _json.loads(to_json(profile, rules))
        data["llama_server"] = server
        return _json.dumps(data, indent=2)
    lines = [f"llama-server: {server['path'] or 'none found'}",
             f"  backend:    {server['backend']}" + (f" ({', '.join(server['devices'])})" if server["devices"] else ""),
             f"  why:        {server['why']}",
             f"  rpc:        {server['rpc'] or 'no (built without -DGGML_RPC=ON: no Mode 2, docs/federation.md)'}"]
    return format_table(profile, rules) + "\n".join(lines) + "\n"


def llama_server_choice(profile: HardwareProfile) -> dict[str, Any]:
    """Which llama-server ``up`` would run on ``profile`` and why (never downloads)."""
    from localswarm.backends.llama_server import choose_llama_server
    from localswarm.errors import LocalSwarmError

    try:
        c = choose_llama_server(profile=profile)
    except LocalSwarmError as exc:
        return {"path": None, "source": None, "backend": "-", "devices": [], "why": str(exc), "rpc": None}
    from localswarm.backends.binary import has_rpc, rpc_server_for

    rpc = rpc_server_for(c.path) if has_rpc(c.path) else None
    return {"path": str(c.path), "source": c.source, "backend": c.backend, "devices": c.devices, "why": c.why,
            "rpc": f"yes, Mode 2 worker binary {rpc}" if rpc else None}
