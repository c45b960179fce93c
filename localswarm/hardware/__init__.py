"""Know the machine: CPU, RAM and every GPU, and how much memory the swarm may use."""

from __future__ import annotations

from .budget import BudgetRules, DeviceBudget, MemoryBudget, budget
from .detect import detect
from .report import detect_command, format_table, hardware_table, to_json
from .types import CPUInfo, GPUInfo, HardwareProfile, MachineKind, Vendor

__all__ = [
    "BudgetRules",
    "CPUInfo",
    "DeviceBudget",
    "GPUInfo",
    "HardwareProfile",
    "MachineKind",
    "MemoryBudget",
    "Vendor",
    "budget",
    "detect",
    "detect_command",
    "format_table",
    "hardware_table",
    "to_json",
]
