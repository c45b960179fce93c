"""The `localswarm` command: thin click wrappers around programmatic functions."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from localswarm import __version__, runner
from localswarm.config import STRATEGIES, STREAM_MODES, load_settings
from localswarm.errors import LocalSwarmError


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # One line per upstream call is noise at info level.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localswarm")
def main() -> None:
    """A swarm of small coding LLMs on your own hardware, behind one OpenAI-compatible API."""


@main.command()
@click.option("--model", help="'embedded' (default), a .gguf path, or family:size:quant.")
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
@click.option("--detach", is_flag=True, help="Run in the background; `localswarm down` stops it.")
def up(detach: bool, **flags: Any) -> None:
    """Start the swarm and serve the OpenAI API."""
    try:
        settings = load_settings(flags)
    except LocalSwarmError as exc:
        _fail(exc)
    _setup_logging(settings.log_level)
    try:
        if detach:
            argv = ["up"]
            for key, value in flags.items():
                if value is not None:
                    argv += [f"--{key.replace('_', '-')}", str(value)]
            info = runner.detach(argv, settings)
            click.echo(runner.summary(settings, info["model"], info["instances"], info["pid"]))
            click.echo(f"  log:        {info['log']}\n  stop with:  localswarm down")
            return
        code = runner.run(settings, on_ready=click.echo)
    except LocalSwarmError as exc:
        _fail(exc)
    sys.exit(code)


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
def status(as_json: bool) -> None:
    """Show the instances of the running swarm: state, port, pid, requests, latency, speed, memory."""
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
    votes = data["votes"]
    click.echo(f"votes: {votes['count']}, early stops: {votes['early_stops']}, mean confidence: {_fmt(votes['mean_confidence'])}")


if __name__ == "__main__":
    main()
