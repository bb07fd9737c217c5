"""Batches: seeded order, epochs, exact resume, the same global batch for any process count, DataLoader workers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ptcli.data.loader import Blocks, TrainBatches, eval_batches, step_generator  # noqa: E402

BLOCKS = Blocks(np.arange(40 * 4, dtype=np.uint16).reshape(40, 4))


def plain(blocks, generator):
    return {"input_ids": blocks}


def noisy(blocks, generator):
    """A collate with randomness, as MLM masking has: drawn from the micro-batch's own generator."""
    return {"input_ids": blocks, "noise": torch.rand(blocks.shape, generator=generator)}


def count(batch):
    return int(batch["input_ids"].numel())


def batches(global_batch, seed, collate=plain, **kwargs):
    return TrainBatches(BLOCKS, collate, count, global_batch, seed, **kwargs)


def rows(steps):
    return sorted(int(row[0]) // 4 for step in steps for batch, _ in step for row in batch["input_ids"])


def test_every_block_once_per_epoch_in_a_seeded_order():
    loader = batches(8, seed=1)
    seen = [i for _ in range(5) for i in rows([loader.next_step()])]
    assert sorted(seen) == list(range(40))
    assert rows([batches(8, seed=1).next_step()]) == seen[:8]
    assert rows([batches(8, seed=2).next_step()]) != seen[:8]
    assert loader.epoch == 1.0


def test_units_are_counted_with_each_micro_batch():
    (batch, units), = batches(8, seed=0).next_step()
    assert units == 8 * 4 == batch["input_ids"].numel()


def test_resume_continues_exactly_with_the_same_randomness():
    a = batches(6, seed=0, collate=noisy)
    steps = [a.next_step() for _ in range(12)]
    b = batches(6, seed=0, collate=noisy)
    for _ in range(7):
        b.next_step()
    c = batches(6, seed=0, collate=noisy)
    c.load_state_dict(b.state_dict())
    c.start(7)  # the loop starts the resumed iterator at the checkpoint's step
    for expected in steps[7:]:
        (batch, _), = c.next_step()
        assert torch.equal(batch["input_ids"], expected[0][0]["input_ids"])
        assert torch.equal(batch["noise"], expected[0][0]["noise"])


def test_two_processes_share_one_global_batch():
    single = batches(8, seed=3, grad_accum=2)
    ranks = [batches(8, seed=3, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        micro = single.next_step()
        assert len(micro) == 2 and micro[0][0]["input_ids"].shape == (4, 4)
        assert rows([micro]) == sorted(rows([ranks[0].next_step()]) + rows([ranks[1].next_step()]))


def test_worker_processes_give_the_same_batches():
    inline = batches(6, seed=5, collate=noisy, grad_accum=2)
    workers = batches(6, seed=5, collate=noisy, grad_accum=2, workers=2)
    for _ in range(8):
        for (a, units_a), (b, units_b) in zip(inline.next_step(), workers.next_step()):
            assert units_a == units_b
            assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["noise"], b["noise"])


def test_micro_batch_randomness_is_a_pure_function_of_where_it_is():
    assert torch.equal(torch.rand(3, generator=step_generator(1, 2, 0, 1)),
                       torch.rand(3, generator=step_generator(1, 2, 0, 1)))
    assert not torch.equal(torch.rand(3, generator=step_generator(1, 2, 0, 1)),
                           torch.rand(3, generator=step_generator(1, 2, 1, 1)))


def test_eval_batches_are_fixed_and_sharded():
    val = Blocks(BLOCKS.blocks[30:])
    all_ = list(eval_batches(val, plain, count, 3, None, seed=0))
    assert [len(b["input_ids"]) for b in all_] == [3, 3, 3, 1]
    shards = [list(eval_batches(val, plain, count, 3, None, seed=0, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == 2 and len(shards[1]) == 2
    assert torch.equal(shards[1][0]["input_ids"], all_[1]["input_ids"])
    assert len(list(eval_batches(val, plain, count, 3, 2, seed=0))) == 2
    first = [b["noise"] for b in eval_batches(val, noisy, count, 3, None, seed=4)]
    again = [b["noise"] for b in eval_batches(val, noisy, count, 3, None, seed=4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def _padded(lengths, steps):
    return int(sum(lengths[s].max() * len(s) for s in steps))


def test_group_by_length_pads_far_less_and_keeps_every_example_once_per_epoch():
    from ptcli.data.loader import StepOrder

    n, batch = 1_003, 16  # does not divide into steps: each epoch's step grid starts at a different offset
    lengths = np.random.default_rng(5).integers(3, 120, size=n)
    grouped = StepOrder(range(n), batch, seed=0, lengths=lengths)
    plain_order = StepOrder(range(n), batch, seed=0)
    for epoch in range(3):  # whole steps inside the epoch, on the global step grid
        first = -(-epoch * n // batch) * batch
        starts = range(first, (epoch + 1) * n - batch + 1, batch)
        steps = [grouped.micro_batches(p)[0] for p in starts]
        assert _padded(lengths, steps) < 0.6 * _padded(lengths, [plain_order.micro_batches(p)[0] for p in starts])
        within = [grouped._permutation(epoch)[k % n] for k in range(epoch * n, (epoch + 1) * n)]
        assert sorted(within) == list(range(n))  # a permutation: every example once per epoch
    # the steps come in a random order, not longest first, and differ from epoch to epoch
    maxima = [lengths[grouped.micro_batches(p)[0]].max() for p in range(0, 50 * batch, batch)]
    assert maxima != sorted(maxima, reverse=True) and maxima != sorted(maxima)
    assert grouped.micro_batches(0) != grouped.micro_batches(n + (-n % batch))


def test_group_by_length_resumes_exactly_and_shards_one_global_batch():
    lengths = np.random.default_rng(6).integers(1, 50, size=40)

    def rows_of(loader, k):
        return [rows([loader.next_step()]) for _ in range(k)]

    whole = rows_of(batches(8, seed=3, lengths=lengths), 12)  # 2.4 epochs
    first = batches(8, seed=3, lengths=lengths)
    rows_of(first, 7)
    resumed = batches(8, seed=3, lengths=lengths)
    resumed.load_state_dict(first.state_dict())
    assert rows_of(resumed, 5) == whole[7:]
    shards = [batches(8, seed=3, lengths=lengths, rank=r, world=2) for r in range(2)]
    together = [sorted(rows([a.next_step()]) + rows([b.next_step()])) for a, b in [shards] * 12]
    assert together == whole
    assert whole != rows_of(batches(8, seed=3), 12)  # grouping changed the order
