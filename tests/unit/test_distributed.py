"""Helpers of the distributed module that run in one process."""

import pytest

torch = pytest.importorskip("torch")

from ptcli.training.distributed import Dist, unwrap  # noqa: E402


class FakeDDP(torch.nn.Module):
    """Looks like DistributedDataParallel to unwrap: has .module and .no_sync."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def no_sync(self):
        return None


def test_unwrap_sees_through_compile_and_ddp():
    model = torch.nn.Linear(2, 2)
    assert unwrap(model) is model
    assert unwrap(torch.compile(model)) is model
    assert unwrap(torch.compile(FakeDDP(model))) is model
    assert list(unwrap(torch.compile(model)).state_dict()) == ["weight", "bias"], "no _orig_mod. prefixes"


def test_single_process_collectives_are_identities():
    d = Dist()
    t = torch.tensor([1.0, 2.0])
    assert d.reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert d.all_true(True) and not d.all_true(False) and d.is_rank0
