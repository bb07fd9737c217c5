"""Batches: seeded order, epochs, exact resume, and the same global batch for any process count."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptcli.data.loader import BlockBatches, eval_batches  # noqa: E402

BLOCKS = np.arange(40 * 4, dtype=np.uint16).reshape(40, 4)


def rows(batches):
    return sorted(int(row[0]) // 4 for step in batches for mb in step for row in mb)


def test_every_block_once_per_epoch_in_a_seeded_order():
    loader = BlockBatches(BLOCKS, np.arange(40), global_batch=8, seed=1)
    seen = [i for _ in range(5) for i in rows([loader.next_step()])]
    assert sorted(seen) == list(range(40))
    again = BlockBatches(BLOCKS, np.arange(40), global_batch=8, seed=1)
    assert rows([again.next_step()]) == seen[:8]
    other = BlockBatches(BLOCKS, np.arange(40), global_batch=8, seed=2)
    assert rows([other.next_step()]) != seen[:8]


def test_resume_continues_exactly():
    a = BlockBatches(BLOCKS, np.arange(40), global_batch=6, seed=0)
    steps = [rows([a.next_step()]) for _ in range(12)]
    b = BlockBatches(BLOCKS, np.arange(40), global_batch=6, seed=0)
    for _ in range(7):
        b.next_step()
    c = BlockBatches(BLOCKS, np.arange(40), global_batch=6, seed=0)
    c.load_state_dict(b.state_dict())
    assert [rows([c.next_step()]) for _ in range(5)] == steps[7:]


def test_two_processes_share_one_global_batch():
    single = BlockBatches(BLOCKS, np.arange(40), global_batch=8, seed=3, grad_accum=2)
    ranks = [BlockBatches(BLOCKS, np.arange(40), global_batch=8, seed=3, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        micro = single.next_step()
        assert len(micro) == 2 and micro[0].shape == (4, 4)
        assert rows([micro]) == sorted(rows([ranks[0].next_step()]) + rows([ranks[1].next_step()]))


def test_eval_batches_are_fixed_and_sharded():
    all_ = [b for b in eval_batches(BLOCKS, np.arange(30, 40), 3, None)]
    assert [len(b) for b in all_] == [3, 3, 3, 1]
    shards = [list(eval_batches(BLOCKS, np.arange(30, 40), 3, None, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == 2 and len(shards[1]) == 2
    assert len(list(eval_batches(BLOCKS, np.arange(30, 40), 3, 2))) == 2
