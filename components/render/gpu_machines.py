"""The GKE H100 machine shapes: which accelerator each A3 machine type carries, and what comes with it.

One table, read by the stack config's validation and by the node-pool component, so the two cannot disagree.
Figures are Google's published A3 shapes (Compute Engine "Accelerator-optimized machine family", A3 series).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GpuDirect = Literal["none", "tcpx", "tcpxo"]
# Every A3 H100, Mega included, carries 80 GB of GPU memory ("nvidia-h100-80gb").
H100_MEMORY_GIB = 80


@dataclass(frozen=True)
class GpuMachine:
    machine_type: str
    accelerator_type: str
    accelerator_count: int
    vcpus: int
    memory_gib: int
    local_ssd_count: int  # 375 GB NVMe disks that come bundled with the shape
    gpudirect: GpuDirect  # GPUDirect flavour the shape supports for multi-node traffic
    extra_networks: int  # additional VPCs/NICs that GPUDirect needs on this shape
    spot_or_flex_only: bool  # 1/2/4-GPU A3 High shapes are sold only as Spot or flex-start (DWS)


H100_MACHINES: dict[str, GpuMachine] = {
    m.machine_type: m
    for m in (
        GpuMachine("a3-highgpu-1g", "nvidia-h100-80gb", 1, 26, 234, 2, "none", 0, True),
        GpuMachine("a3-highgpu-2g", "nvidia-h100-80gb", 2, 52, 468, 4, "none", 0, True),
        GpuMachine("a3-highgpu-4g", "nvidia-h100-80gb", 4, 104, 936, 8, "none", 0, True),
        GpuMachine("a3-highgpu-8g", "nvidia-h100-80gb", 8, 208, 1872, 16, "tcpx", 4, False),
        GpuMachine("a3-megagpu-8g", "nvidia-h100-mega-80gb", 8, 208, 1872, 16, "tcpxo", 8, False),
    )
}
