"""Geometry of a TPACKET_V3 ring: a plain dataclass, importable without numba (the CLI's
argument parser reads its defaults)."""
from __future__ import annotations

import mmap
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RingConfig:
    """Geometry and options of one TPACKET_V3 ring (see docs/capture.md for the measurements).

    block_size         bytes per block; a multiple of the page size. The kernel hands blocks
                       over whole, so this bounds how many packets one batch carries.
    block_count        blocks per ring; ring memory = block_size * block_count per socket.
    frame_size         TPACKET_V3 ignores it for packing (packets are packed back to back);
                       the kernel only checks block_size % frame_size == 0 and the frame count.
    retire_timeout_ms  a partly filled block is handed over this long after its first packet:
                       the latency bound at low rates.
    snaplen            bytes of each packet copied into the ring (the filter's return value).
    max_blocks_per_batch  retired blocks walked into one PacketBatch.
    """

    block_size: int = 1 << 20
    block_count: int = 64
    frame_size: int = 2048
    retire_timeout_ms: int = 50
    snaplen: int = 262144
    max_blocks_per_batch: int = 4

    def __post_init__(self) -> None:
        page = mmap.PAGESIZE
        if self.block_size <= 0 or self.block_size % page:
            raise ValueError(f"block_size must be a positive multiple of the page size ({page})")
        if self.block_count < 2:
            raise ValueError("block_count must be >= 2")
        if self.frame_size < 64 or self.frame_size % 16 or self.block_size % self.frame_size:
            raise ValueError("frame_size must be a multiple of 16, >= 64, and divide block_size")
        if not 1 <= self.retire_timeout_ms <= 60_000:
            raise ValueError("retire_timeout_ms must be within 1..60000")
        if self.snaplen < 64:
            raise ValueError("snaplen must be >= 64")
        if not 1 <= self.max_blocks_per_batch <= self.block_count:
            raise ValueError("max_blocks_per_batch must be within 1..block_count")

    @property
    def ring_bytes(self) -> int:
        return self.block_size * self.block_count
