"""Batches for the loop: a seeded order that resumes exactly and shards across processes, collated by the objective
in ``torch.utils.data.DataLoader`` workers (prefetched, pinned on CUDA).

Every micro-batch is a pure function of (seed, step, rank, micro-step): which examples it holds comes from a seeded
permutation per epoch, and its randomness (MLM masks, augmentation) from a generator seeded by where it is. So a
killed and resumed run draws exactly what an uninterrupted one would, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def step_generator(seed: int, step: int, rank: int, micro: int):
    """A generator for one micro-batch's randomness: a pure function of where we are."""
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank * 101 + micro)


def row_seed(seed: int, index: int, sequence: int = 0) -> int:
    """A 63-bit seed for one row (a prompt, an evaluation block): the same row and seed give the same draws in any
    batch."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}:{index}:{sequence}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


GROUP_STEPS = 50  # train.group_by_length sorts runs of this many steps' examples (the HF Trainer's megabatches)


class StepOrder:
    """Global batches of ``global_batch`` examples per optimizer step, in a fresh seeded permutation every epoch.
    Each process takes its contiguous share of the global batch and splits it into ``grad_accum`` micro-batches, so
    one process with accumulation and N processes see the same global batch."""

    def __init__(self, indices, global_batch: int, seed: int, rank: int = 0, world: int = 1, grad_accum: int = 1,
                 lengths=None):
        self.indices = np.asarray(indices)
        self.global_batch, self.seed, self.grad_accum = global_batch, seed, grad_accum
        self.rank, self.world = rank, world
        # train.group_by_length: each example's length (aligned with indices), so that a step's examples are alike
        self.lengths = None if lengths is None else np.asarray(lengths)
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int):
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))
            if self.lengths is not None:
                self._perm = self._grouped(self._perm, epoch)
            self._perm_epoch = epoch
        return self._perm

    def _grouped(self, perm, epoch: int):
        """``perm`` with alike lengths in each step (``train.group_by_length``; the idea of the HF Trainer's
        LengthGroupedSampler): runs of ``GROUP_STEPS`` steps' worth of the shuffled order are sorted by length, cut
        into steps, and those steps shuffled, so every step pads little and the steps stay in a random order.
        The cuts follow the step grid, which moves from epoch to epoch when the data does not divide into steps:
        the first positions of an epoch complete the previous epoch's last step and are left as they are."""
        n, size = len(perm), self.global_batch
        head = (-epoch * n) % size  # positions before the first step that starts in this epoch
        rng = np.random.default_rng([self.seed, epoch, 1])
        pieces = [perm[:head]]
        for start in range(head, n, size * GROUP_STEPS):
            run = perm[start:start + size * GROUP_STEPS]
            run = run[np.argsort(-self.lengths[run], kind="stable")]
            steps = [run[i:i + size] for i in range(0, len(run), size)]
            whole = [steps[i] for i in rng.permutation(len(steps) - (len(steps[-1]) < size))]
            pieces += whole + steps[len(whole):]  # a part step (the epoch's last) stays last
        return np.concatenate(pieces)

    def micro_batches(self, position: int) -> list[list[int]]:
        """The example indices of this process's micro-batches in the step that starts at ``position``."""
        n = len(self.indices)
        chosen = [int(self.indices[self._permutation(pos // n)[pos % n]])
                  for pos in range(position, position + self.global_batch)]
        share = self.global_batch // self.world
        mine = chosen[self.rank * share:(self.rank + 1) * share]
        micro = share // self.grad_accum
        return [sorted(mine[i * micro:(i + 1) * micro]) for i in range(self.grad_accum)]


    def count(self, position: int) -> int:
        """How many micro-batches the step that starts at ``position`` has."""
        return self.grad_accum


class PoissonOrder(StepOrder):
    """DP-SGD's sampling (``+privacy=dp``): every example joins a step's batch independently with probability
    ``global_batch / N``, so a batch has ``global_batch`` examples on average and the accountant's subsampling
    amplification holds. The draw is a pure function of (seed, step), so a resumed run draws the same batches; the
    step's examples are split into up to ``grad_accum`` micro-batches (virtual batches: one noisy step over them).
    One process only: the noise is added once, to the sum."""

    def __init__(self, indices, global_batch: int, seed: int, grad_accum: int = 1):
        super().__init__(indices, global_batch, seed, 0, 1, grad_accum)
        self.rate = global_batch / max(len(self.indices), 1)
        self._cached: tuple[int, list] | None = None

    def micro_batches(self, position: int) -> list[list[int]]:
        step = position // self.global_batch
        if self._cached is None or self._cached[0] != step:
            draw = np.random.default_rng([self.seed, 0x5EED, step]).random(len(self.indices))
            chosen = self.indices[draw < self.rate]
            parts = min(self.grad_accum, len(chosen))  # an empty draw is a step of noise alone
            self._cached = (step, [sorted(int(i) for i in part) for part in np.array_split(chosen, parts)]
                            if parts else [])
        return self._cached[1]

    def count(self, position: int) -> int:
        return len(self.micro_batches(position))


class _Steps:
    """The DataLoader's sampler: keys ``(step, micro, indices)`` from a position on, one per micro-batch, forever."""

    def __init__(self, order: StepOrder, position: int, step: int):
        self.order, self.position, self.step = order, position, step

    def __iter__(self):
        position, step = self.position, self.step
        while True:
            for micro, indices in enumerate(self.order.micro_batches(position)):
                yield step, micro, tuple(indices)
            position += self.order.global_batch
            step += 1


class Collated:
    """A map-style dataset whose items are collated micro-batches: ``(batch, units)`` for a key ``(step, micro,
    indices)``. ``units`` (tokens, images, seconds of audio) are counted here, on CPU tensors, so the loop never
    reads the device for throughput."""

    def __init__(self, data, collate: Callable, units: Callable, seed: int, rank: int):
        self.data, self.collate, self.units, self.seed, self.rank = data, collate, units, seed, rank

    def __getitem__(self, key):
        step, micro, indices = key
        fetch = getattr(self.data, "fetch", None)
        examples = fetch(list(indices)) if fetch is not None else [self.data[i] for i in indices]
        batch = self.collate(examples, step_generator(self.seed, step, self.rank, micro))
        return batch, self.units(batch)

    def __len__(self) -> int:
        return len(self.data)


def _identity(item):
    return item


def data_loader(dataset, sampler, workers: int, pin: bool):
    """A DataLoader over ready keys (no automatic batching: each item is a whole micro-batch)."""
    import os

    import torch
    from torch.utils.data import DataLoader

    if workers:  # collation forks after tokenization: the Rust tokenizer would warn about its thread pool
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A generator of its own: a DataLoader draws its workers' base seed from the global RNG otherwise, which would
    # shift dropout after a resume (the loader starts after the checkpoint's RNG state is restored).
    return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_identity, num_workers=workers,
                      pin_memory=pin, prefetch_factor=2 if workers else None,
                      generator=torch.Generator().manual_seed(0))


class TrainBatches:
    """This process's training micro-batches from a position on. ``next_step()`` gives the micro-batches of the next
    optimizer step as ``(batch, units)`` pairs; the state is the position (examples consumed), so resume is exact."""

    def __init__(self, data, collate: Callable, units: Callable, global_batch: int, seed: int, rank: int = 0,
                 world: int = 1, grad_accum: int = 1, workers: int = 0, pin: bool = False, indices=None,
                 poisson: bool = False, lengths=None):
        self.data = data
        rows = range(len(data)) if indices is None else indices
        if lengths is not None and indices is not None:
            lengths = np.asarray(lengths)[np.asarray(indices)]
        self.order = PoissonOrder(rows, global_batch, seed, grad_accum) if poisson else \
            StepOrder(rows, global_batch, seed, rank, world, grad_accum, lengths)
        self.dataset = Collated(data, collate, units, seed, rank)
        self.global_batch, self.grad_accum, self.workers, self.pin = global_batch, grad_accum, workers, pin
        self.position = 0
        self._iter: Iterator | None = None

    def __len__(self) -> int:
        return len(self.order.indices)

    @property
    def epoch(self) -> float:
        return self.position / max(len(self), 1)

    def start(self, step: int) -> None:
        """Begin at optimizer step ``step`` (its randomness is seeded by it) from the current position."""
        self._iter = iter(data_loader(self.dataset, _Steps(self.order, self.position, step), self.workers, self.pin))

    def next_step(self) -> list:
        if self._iter is None:
            self.start(0)
        out = [next(self._iter) for _ in range(self.order.count(self.position))]
        self.position += self.global_batch
        return out

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self._iter = None


def eval_batches(data, collate: Callable, units: Callable, batch_size: int, max_batches: int | None, seed: int,
                 rank: int = 0, world: int = 1, workers: int = 0, pin: bool = False, indices=None):
    """Validation micro-batches in a fixed order; each process takes every world-th batch. Batch i's randomness (MLM
    masks) is seeded by i alone, so every evaluation, and 1 or N processes, see the same masks."""
    order = list(range(len(data))) if indices is None else [int(i) for i in indices]
    starts = list(range(0, len(order), batch_size))
    if max_batches:
        starts = starts[:max_batches]
    keys = [(0, i, tuple(sorted(order[s:s + batch_size]))) for i, s in enumerate(starts) if i % world == rank]
    loader = data_loader(Collated(data, collate, units, seed, 0), keys, workers, pin)
    for batch, _ in loader:
        yield batch


class Blocks:
    """Packed token blocks (a read-only memmap) as a dataset: ``fetch`` reads several rows at once (sorted, so
    memory-mapped reads go forward) into one LongTensor."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def fetch(self, indices: list[int]):
        import torch

        return torch.from_numpy(self.blocks[np.sort(indices)].astype(np.int64))
