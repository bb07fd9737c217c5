"""Checkpoints: round trip, keep-last-K, atomicity when a save fails (a full disk), weights-only loading."""

import errno
import json

import pytest

torch = pytest.importorskip("torch")

from ptcli.errors import RunFailure  # noqa: E402
from ptcli.training import checkpoint  # noqa: E402


def parts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler, scaler


def test_round_trip_restores_everything(tmp_path):
    model, optimizer, scheduler, scaler = parts()
    manager = checkpoint.CheckpointManager(tmp_path, keep_last=2)
    path = manager.save(model, optimizer, scheduler, scaler, {"step": 1, "tokens": 10, "data": {"position": 8}})
    expected_random = torch.rand(3)
    fresh = parts()
    with torch.no_grad():
        for p in fresh[0].parameters():
            p.add_(1.0)
    state = checkpoint.load(path, *fresh)
    assert state == {"step": 1, "tokens": 10, "data": {"position": 8}}
    for a, b in zip(model.state_dict().values(), fresh[0].state_dict().values()):
        assert torch.equal(a, b)
    assert fresh[1].state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])
    assert fresh[2].state_dict()["last_epoch"] == 1
    assert torch.equal(torch.rand(3), expected_random), "the RNG continues where the checkpoint was taken"


def test_keeps_only_the_last_k(tmp_path):
    model, optimizer, scheduler, scaler = parts()
    manager = checkpoint.CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        manager.save(model, optimizer, scheduler, scaler, {"step": step})
    assert [p.name for p in manager.complete()] == ["step-00000002", "step-00000003"]
    assert checkpoint.find_checkpoint("auto", tmp_path).name == "step-00000003"
    assert checkpoint.find_checkpoint(str(tmp_path), tmp_path / "other").name == "step-00000003"


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                                                "failed writing file data/0: file write failed")])
def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, error):
    """torch.save reports a full disk as a RuntimeError: either way one clear error, the partial folder removed."""
    model, optimizer, scheduler, scaler = parts()
    manager = checkpoint.CheckpointManager(tmp_path, keep_last=2)
    good = manager.save(model, optimizer, scheduler, scaler, {"step": 1})
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if "rng" in str(f):
            raise error
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RunFailure, match="the disk is full") as info:
        manager.save(model, optimizer, scheduler, scaler, {"step": 2})
    assert "Free disk space" in info.value.message() and "step-00000001 is intact" in info.value.message()
    assert [p.name for p in tmp_path.joinpath("checkpoints").iterdir()] == ["step-00000001"]
    assert json.loads((good / "state.json").read_text())["step"] == 1


def test_incomplete_folder_is_not_a_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / "step-00000009").mkdir(parents=True)
    assert checkpoint.find_checkpoint("auto", tmp_path) is None
    with pytest.raises(Exception, match="no complete checkpoint"):
        checkpoint.find_checkpoint(str(tmp_path), tmp_path)


def test_optimizer_file_loads_with_weights_only(tmp_path):
    model, optimizer, scheduler, scaler = parts()
    path = checkpoint.CheckpointManager(tmp_path, 1).save(model, optimizer, scheduler, scaler, {"step": 1})
    torch.load(path / "optimizer.pt", weights_only=True)
    torch.load(path / "rng.pt", weights_only=True)
