"""Android phones (Termux): ``getprop`` for the device and SoC, kgsl sysfs for Adreno."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ._run import Runner, logger, read_text, run_tool
from .types import GPUInfo, Vendor

_PROP = re.compile(r"^\[(?P<key>[^\]]+)\]:\s*\[(?P<value>.*)\]\s*$")


def is_android(env: Mapping[str, str], sysfs_root: Path = Path("/")) -> bool:
    """True inside Termux or on any Android userland."""
    if env.get("TERMUX_VERSION") or "com.termux" in env.get("PREFIX", ""):
        return True
    if env.get("ANDROID_ROOT") or env.get("ANDROID_DATA"):
        return True
    return (sysfs_root / "system" / "build.prop").exists()


def parse_getprop(text: str | None) -> dict[str, str]:
    """``[key]: [value]`` lines from ``getprop`` as a dict."""
    props: dict[str, str] = {}
    for line in (text or "").splitlines():
        m = _PROP.match(line.strip())
        if m:
            props[m.group("key")] = m.group("value")
    return props


def detect_android(
    run: Runner = run_tool, sysfs_root: Path = Path("/"), ram_total: int | None = None
) -> tuple[dict[str, str], list[GPUInfo]]:
    """``(props, gpus)``: a few device properties and the Adreno GPU if one is found.

    The GPU shares system memory, so ``memory_total`` is the phone's RAM.
    """
    props = parse_getprop(run(["getprop"]))
    model = read_text(sysfs_root / "sys" / "class" / "kgsl" / "kgsl-3d0" / "gpu_model")
    soc = props.get("ro.soc.model") or props.get("ro.board.platform") or ""
    manufacturer = props.get("ro.soc.manufacturer", "")
    info = {
        "device": " ".join(
            p for p in (props.get("ro.product.manufacturer"), props.get("ro.product.model")) if p
        ),
        "soc": soc,
        "android": props.get("ro.build.version.release", ""),
    }
    gpus: list[GPUInfo] = []
    if model:
        name = re.sub(r"^Adreno(\d+)", r"Adreno \1", model)
        gpus.append(GPUInfo(
            vendor=Vendor.QUALCOMM.value, name=name, index=0, memory_total=ram_total,
            unified=True, backend_hint="opencl", source="kgsl",
        ))
    elif manufacturer.upper() in {"QTI", "QUALCOMM"} or props.get("ro.hardware.egl") == "adreno":
        gpus.append(GPUInfo(
            vendor=Vendor.QUALCOMM.value, name=f"Adreno ({soc})" if soc else "Adreno",
            index=0, memory_total=ram_total, unified=True, backend_hint="opencl",
            source="getprop",
        ))
    else:
        logger.debug("hardware: no Adreno GPU found (kgsl unreadable, SoC %r)", soc)
    return info, gpus
