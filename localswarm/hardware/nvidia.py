"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ._run import logger
from .types import GPUInfo, Vendor


def _load_nvml() -> ModuleType | None:
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        logger.debug("hardware: pynvml (nvidia-ml-py) is not installed")
        return None
    return pynvml


def _text(value: Any) -> str:
    # Old pynvml releases return bytes for names and versions.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def detect_nvidia(nvml: Any | None = None) -> list[GPUInfo]:
    """Every NVIDIA GPU NVML reports, in NVML index order.

    ``nvml`` is the ``pynvml`` module or any object with the same functions (tests pass a
    replay of recorded values). Missing library, no driver or a failing call yields fewer
    fields or an empty list, never an exception.
    """
    nvml = nvml if nvml is not None else _load_nvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        logger.debug("hardware: NVML init failed: %s", exc)
        return []
    gpus: list[GPUInfo] = []
    try:
        try:
            driver: str | None = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception as exc:
            logger.debug("hardware: NVML driver version: %s", exc)
            driver = None
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            logger.debug("hardware: NVML device count: %s", exc)
            count = 0
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:
                logger.debug("hardware: NVML handle %d: %s", index, exc)
                continue
            gpus.append(_one(nvml, handle, index, driver))
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # shutting down a half-initialised NVML is not worth a crash
            pass
    return gpus


def _one(nvml: Any, handle: Any, index: int, driver: str | None) -> GPUInfo:
    try:
        name = _text(nvml.nvmlDeviceGetName(handle))
    except Exception as exc:
        logger.debug("hardware: NVML name %d: %s", index, exc)
        name = f"NVIDIA GPU {index}"
    total = free = None
    try:
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        total, free = int(mem.total), int(mem.free)
    except Exception as exc:
        logger.debug("hardware: NVML memory %d: %s", index, exc)
    cc = None
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        cc = f"{int(major)}.{int(minor)}"
    except Exception as exc:
        logger.debug("hardware: NVML compute capability %d: %s", index, exc)
    bandwidth, flops = _peaks(nvml, handle, index)
    return GPUInfo(
        vendor=Vendor.NVIDIA.value,
        name=name,
        index=index,
        memory_total=total,
        memory_free=free,
        driver=driver,
        compute_capability=cc,
        unified=False,
        backend_hint="cuda",
        source="nvml",
        memory_bandwidth=bandwidth,
        fp16_flops=flops,
    )


def _peaks(nvml: Any, handle: Any, index: int) -> tuple[float | None, float | None]:
    """Peak memory bandwidth and FP16 FLOP/s from NVML (NVML API reference, Device Queries:
    ``nvmlDeviceGetMemoryBusWidth`` in bits, ``nvmlDeviceGetMaxClockInfo`` with
    ``NVML_CLOCK_MEM`` / ``NVML_CLOCK_SM`` in MHz, ``nvmlDeviceGetNumGpuCores``).

    Bandwidth = bus width / 8 x memory clock x 2 (double data rate: an RTX 4090 reports 384
    bits and 10,501 MHz, 1,008 GB/s; an H100 SXM 5,120 bits and 2,619 MHz, 3.35 TB/s).
    FP16 = CUDA cores x 2 (one FMA) x SM clock: the non-tensor rate where it equals FP32
    (Ada), a floor where FP16 runs faster.
    """
    bandwidth = flops = None
    try:
        bus = int(nvml.nvmlDeviceGetMemoryBusWidth(handle))
        mem_mhz = int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM))
        bandwidth = bus / 8 * mem_mhz * 1e6 * 2 if bus > 0 and mem_mhz > 0 else None
    except Exception as exc:  # older drivers: NVMLError_NotSupported, FunctionNotFound
        logger.debug("hardware: NVML bandwidth %d: %s", index, exc)
    try:
        cores = int(nvml.nvmlDeviceGetNumGpuCores(handle))
        sm_mhz = int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM))
        flops = cores * 2 * sm_mhz * 1e6 if cores > 0 and sm_mhz > 0 else None
    except Exception as exc:
        logger.debug("hardware: NVML cores %d: %s", index, exc)
    return bandwidth, flops
