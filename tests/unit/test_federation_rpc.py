"""Mode 2 pieces in-process: the relay's allow list, the signed handshake, the split, the keeper.

The real rpc-server and llama-server --rpc run in tests/integration/test_rpc_netns.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from localswarm.federation.auth import FederationAuth, sign_reply
from localswarm.federation.relay import AllowList, Relay
from localswarm.federation.rpc import RPC_PATH, RpcOffer, RpcWorker, offered_memory
from localswarm.federation.rpcpool import DROP_AFTER, PooledWorker, PoolKeeper, handshake, pooled_plan, rpc_args
from localswarm.hardware.types import CPUInfo, HardwareProfile
from localswarm.supervisor.states import State

SECRET = b"unit-test-secret-0123456789abcdef"
GiB = 2**30
_CPU = CPUInfo(model="cpu", arch="x86_64", physical_cores=4, logical_cores=4)


def test_allow_list_expires_and_normalises_addresses() -> None:
    now = [0.0]
    allow = AllowList(ttl_s=10, clock=lambda: now[0])
    allow.allow("::ffff:10.0.0.2")
    assert allow.allowed("10.0.0.2") and not allow.allowed("10.0.0.3") and not allow.allowed("junk")
    now[0] = 11
    assert not allow.allowed("10.0.0.2") and allow.addresses() == []


async def _echo_server() -> tuple[asyncio.base_events.Server, list[str]]:
    seen: list[str] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername")[0])
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0), seen


async def test_relay_pipes_a_handshaken_address_and_closes_any_other_at_once() -> None:
    server, seen = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    allow = AllowList()
    relay = Relay("127.0.0.1", 0, allow, lambda: ("127.0.0.1", port))
    await relay.start()
    try:
        # Not handshaken: closed before a byte is read; the service never sees it.
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, local_addr=("127.0.0.2", 0))
        writer.write(b"hello")
        assert await _closed(reader)
        writer.close()
        assert relay.refused == 1 and seen == []
        allow.allow("127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, local_addr=("127.0.0.1", 0))
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        writer.close()
        assert relay.relayed == 1 and seen == ["127.0.0.1"]
    finally:
        await relay.aclose()
        server.close()


async def _closed(reader: asyncio.StreamReader) -> bool:
    """True when the other side closed (EOF) or reset (the relay aborts) without sending a byte."""
    try:
        return await asyncio.wait_for(reader.read(100), 5) == b""
    except ConnectionResetError:
        return True


def _worker(tmp_path: Path) -> RpcWorker:
    worker = RpcWorker(binary=Path("/nonexistent/rpc-server"), host="127.0.0.1", relay_port=0, secret=SECRET,
                       threads=1, memory=3 * GiB, backend="cpu", log_dir=tmp_path, node_id="a" * 32, name="w:8000")
    worker.relay.port = 50052
    return worker


async def test_only_a_signed_handshake_opens_the_relay_and_its_reply_is_signed(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    app = Starlette(routes=worker.routes())
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://w") as plain:
        resp = await plain.post(RPC_PATH, json={"v": 1})
        assert resp.status_code == 401 and not worker.allow.allowed("10.0.0.9")
    wrong = FederationAuth(b"another-secret-0123456789abcdef", node_id="c")
    async with httpx.AsyncClient(transport=transport, base_url="http://w", auth=wrong) as bad:
        assert (await bad.post(RPC_PATH, json={"v": 1})).status_code == 401
    good = FederationAuth(SECRET, node_id="c")
    async with httpx.AsyncClient(transport=transport, base_url="http://w", auth=good) as signed:
        resp = await signed.post(RPC_PATH, json={"v": 1})
        assert resp.status_code == 503 and not worker.allow.allowed("10.0.0.9")  # rpc-server not running yet
        worker.instance.state = State.READY  # as the supervisor leaves it once rpc-server accepts
        offer = RpcOffer.from_dict((await signed.post(RPC_PATH, json={"v": 1})).json())  # reply verified by auth
    assert offer == RpcOffer(node_id="a" * 32, name="w:8000", port=50052, memory=3 * GiB, backend="cpu")
    assert worker.allow.addresses() == ["10.0.0.9"]


async def test_a_reply_not_signed_by_the_worker_is_refused() -> None:
    def forged(request: httpx.Request) -> httpx.Response:
        body = json.dumps(RpcOffer("n", "x", 1, GiB, "cpu").to_dict()).encode()
        headers = sign_reply(200, request.headers["x-localswarm-nonce"], body, b"not-the-secret-0123456789")
        return httpx.Response(200, content=body, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(forged), auth=FederationAuth(SECRET)) as http:
        with pytest.raises(Exception, match="signature"):
            await handshake(http, "10.0.0.2", 8000)


def _pooled(host: str, memory: int, port: int = 50052) -> PooledWorker:
    return PooledWorker(host=host, port=8000, offer=RpcOffer("n" + host, host, port, memory, "cpu"))


def test_split_keeps_a_cpu_coordinators_share_and_gives_gpus_theirs() -> None:
    workers = [_pooled("10.0.0.2", 4 * GiB), _pooled("10.0.0.3", 4 * GiB)]
    # CPU-only coordinator with as much as each worker: a third of 30 layers stays home.
    assert rpc_args(workers, own_memory=4 * GiB, n_layers=30) == [
        "--rpc", "10.0.0.2:50052,10.0.0.3:50052", "-ngl", "20", "-ts", "4096,4096"]
    # With a GPU: everything offloaded, the GPU's share last (llama.cpp lists RPC devices first).
    assert rpc_args(workers[:1], own_memory=8 * GiB, n_layers=30, own_gpus=1) == [
        "--rpc", "10.0.0.2:50052", "-ngl", "999", "-ts", "4096,8192"]
    assert rpc_args([], own_memory=GiB, n_layers=30) == []


def _cpu_host(ram: int) -> HardwareProfile:
    return HardwareProfile(os="linux", os_release="", cpu=_CPU, ram_total=ram, ram_available=ram)


def test_pooled_memory_plans_a_model_that_no_single_machine_fits() -> None:
    from localswarm.hardware.budget import budget
    from localswarm.models.planner import plan

    own = _cpu_host(8 * GiB)  # 4 GiB budget (50% of RAM)
    alone = plan(own, instances=1, latency_target=None, locate=lambda ref: None)
    workers = [_pooled("10.0.0.2", 6 * GiB), _pooled("10.0.0.3", 6 * GiB)]
    pooled = pooled_plan(own, workers, ctx=4096, parallel=1, locate=lambda ref: None)
    assert pooled.instances == 1
    assert pooled.total_memory > budget(own).total  # more than this machine alone could hold
    assert pooled.total_memory <= budget(own).total + 12 * GiB
    assert pooled.total_memory > alone.total_memory


def test_offered_memory_is_the_budget_capped_by_free_ram() -> None:
    host = HardwareProfile(os="linux", os_release="", cpu=_CPU, ram_total=16 * GiB, ram_available=5 * GiB)
    assert offered_memory(host) == (5 * GiB, "cpu")


async def test_keeper_drops_a_worker_that_stops_answering_and_renews_the_others() -> None:
    down: set[str] = set()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host in down:
            raise httpx.ConnectError("unreachable")
        body = json.dumps(RpcOffer("n", request.url.host, 50052, GiB, "cpu").to_dict()).encode()
        return httpx.Response(200, content=body,
                              headers=sign_reply(200, request.headers["x-localswarm-nonce"], body, SECRET))

    keeper = PoolKeeper([_pooled("10.0.0.2", GiB), _pooled("10.0.0.3", GiB)], secret=SECRET, node_id="c",
                        interval_s=0.01, own_memory=GiB, n_layers=30)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer), auth=FederationAuth(SECRET)) as http:
        assert await keeper.check(http) == []
        down.add("10.0.0.3")
        for _ in range(DROP_AFTER - 1):
            assert await keeper.check(http) == []  # one miss is not a disappearance
        assert await keeper.check(http) == ["10.0.0.3:50052 gone"]
        assert keeper.args()[:2] == ["--rpc", "10.0.0.2:50052"]
        assert [w.host for w in keeper.dropped] == ["10.0.0.3"]
        assert await keeper.check(http) == []  # still gone: nothing changes
        down.clear()
        assert await keeper.check(http) == ["10.0.0.3:50052 back"]
    assert keeper.args()[:2] == ["--rpc", "10.0.0.2:50052,10.0.0.3:50052"] and keeper.dropped == []


def test_rpc_build_is_recognised_by_the_files_beside_llama_server(tmp_path: Path) -> None:
    from localswarm.backends.binary import RPC_CMAKE_ARG, build_args, has_rpc, rpc_server_for

    server = tmp_path / "llama-server"
    server.touch()
    assert rpc_server_for(server) is None and not has_rpc(server)  # a build without -DGGML_RPC=ON
    (tmp_path / "rpc-server").touch()  # the name before b9871
    assert rpc_server_for(server) == tmp_path / "rpc-server"
    (tmp_path / "ggml-rpc-server").touch()  # the current name wins
    (tmp_path / "libggml-rpc.so.0").touch()
    assert rpc_server_for(server) == tmp_path / "ggml-rpc-server" and has_rpc(server)
    cpu = _cpu_host(8 * GiB)
    assert build_args(cpu, which=lambda t: None, exists=lambda p: False) == RPC_CMAKE_ARG  # RPC by default


@pytest.mark.parametrize(("argv", "env", "words"), [
    (["worker"], {}, ["worker --rpc"]),
    (["worker", "--rpc", "--host", "192.168.1.5"], {}, ["needs the federation secret"]),
    (["worker", "--rpc", "--host", "0.0.0.0"], {"LOCALSWARM_FEDERATION_SECRET": SECRET.decode()},
     ["binds one address", "0.0.0.0"]),
])
def test_worker_refuses_to_start_open(argv: list[str], env: dict[str, str], words: list[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from localswarm.cli import main

    monkeypatch.delenv("LOCALSWARM_FEDERATION_SECRET", raising=False)
    result = CliRunner().invoke(main, argv, env=env)
    assert result.exit_code == 1
    for word in words:
        assert word in result.output


def test_pool_needs_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from localswarm.config import Settings
    from localswarm.federation.errors import SecretError
    from localswarm.federation.rpcpool import start_pool

    monkeypatch.delenv("LOCALSWARM_FEDERATION_SECRET", raising=False)
    with pytest.raises(SecretError, match="needs the federation secret"):
        start_pool(Settings(mode="distributed"))
