"""torchrun support: rank/world from the environment, a gloo/nccl group, and collective helpers.

`torchrun --nproc-per-node N -m evaluation.coco ...` (or multi-node through torchrun's rendezvous)
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; without them everything is a no-op single process.
"""
from __future__ import annotations

import datetime
import os


class Dist:
    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local)
        # Ranks finish their shards at different times: give the final barrier room.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=6))
        return cls(rank, world, local)

    def device_for(self, device: str) -> str:
        """Each rank on its own GPU: `cuda`/`auto` -> cuda:LOCAL_RANK when distributed on CUDA."""
        if not self.enabled:
            return device
        import torch

        if device in ("cuda", "auto") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return device

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj`, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj`, on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, error: str | None) -> str | None:
        """The first rank's error message, if any rank has one, so that all ranks stop together."""
        return next((e for e in self.gather(error) if e), None)

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
