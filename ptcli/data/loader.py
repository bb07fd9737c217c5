"""Batches of packed blocks in a seeded order that resumes exactly and shards across processes."""

from __future__ import annotations

import numpy as np


class BlockBatches:
    """Global batches of ``global_batch`` blocks per optimizer step, in a fresh seeded permutation every epoch.

    Each process takes its contiguous share of the global batch and splits it into ``grad_accum``
    micro-batches, so one process with accumulation and N processes see the same global batch. The only
    state is ``position`` (blocks consumed so far), which makes resume exact.
    """

    def __init__(self, blocks, indices, global_batch: int, seed: int, rank: int = 0, world: int = 1,
                 grad_accum: int = 1):
        self.blocks, self.indices = blocks, np.asarray(indices)
        self.global_batch, self.seed, self.grad_accum = global_batch, seed, grad_accum
        self.rank, self.world = rank, world
        self.position = 0
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def epoch(self) -> float:
        return self.position / len(self.indices)

    def _permutation(self, epoch: int):
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))
            self._perm_epoch = epoch
        return self._perm

    def next_step(self) -> list:
        """The micro-batches (LongTensors of token ids) this process trains on in the next step."""
        n = len(self.indices)
        chosen = []
        for pos in range(self.position, self.position + self.global_batch):
            chosen.append(self.indices[self._permutation(pos // n)[pos % n]])
        self.position += self.global_batch
        share = self.global_batch // self.world
        mine = chosen[self.rank * share:(self.rank + 1) * share]
        micro = share // self.grad_accum
        return [self.fetch(mine[i * micro:(i + 1) * micro]) for i in range(self.grad_accum)]

    def fetch(self, chosen):
        """The micro-batch for these indices (sorted: memory-mapped reads go forward)."""
        import torch

        return torch.from_numpy(self.blocks[np.sort(chosen)].astype(np.int64))

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


def eval_batches(blocks, indices, batch_size: int, max_batches: int | None, rank: int = 0, world: int = 1):
    """Validation micro-batches in a fixed order; each process takes every world-th batch."""
    import torch

    indices = np.asarray(indices)
    starts = list(range(0, len(indices), batch_size))
    if max_batches:
        starts = starts[:max_batches]
    for i, start in enumerate(starts):
        if i % world == rank:
            yield torch.from_numpy(blocks[np.sort(indices[start:start + batch_size])].astype(np.int64))
