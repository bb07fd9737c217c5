"""Objectives: losses equal a manual computation; MLM masking has the promised statistics."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ptcli.objectives.clm import CausalLM  # noqa: E402
from ptcli.objectives.mlm import MaskedLM  # noqa: E402


class FakeTokenizer:
    """The few attributes MaskedLM.bind reads, for a vocabulary of 100 ids with '##' pieces at 50-99."""

    mask_token_id, sep_token_id, cls_token_id, pad_token_id = 4, 3, 2, 0
    all_special_ids = [0, 1, 2, 3, 4]

    def __len__(self):
        return 100

    def convert_ids_to_tokens(self, ids):
        return [f"##p{i}" if i >= 50 else f"w{i}" for i in ids]

    def get_vocab(self):
        return {tok: i for i, tok in enumerate(self.convert_ids_to_tokens(range(100)))}


def tiny_gpt2():
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=50)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()  # no dropout: two forwards must agree


def test_clm_loss_is_the_summed_shifted_cross_entropy():
    model = tiny_gpt2()
    ids = torch.randint(50, (3, 12), generator=torch.Generator().manual_seed(0))
    out = CausalLM().loss(model, CausalLM().collate(ids))
    reference = model(input_ids=ids, labels=ids).loss  # transformers' own mean over 3 x 11 positions
    assert out.count.item() == 3 * 11
    assert (out.sum / out.count).item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.fixture
def mlm(monkeypatch):
    import numpy as np

    from ptcli.processing import tokenizers

    monkeypatch.setattr(tokenizers, "continuation_mask", lambda tok: np.arange(100) >= 50, raising=False)
    objective = MaskedLM()
    objective.bind(FakeTokenizer())
    return objective


def test_mlm_masking_statistics(mlm):
    blocks = torch.randint(5, 100, (64, 128), generator=torch.Generator().manual_seed(0))
    blocks[:, 0] = 2  # [CLS] is never masked
    batch = mlm.collate(blocks, torch.Generator().manual_seed(1))
    chosen = batch["labels"] != -100
    assert not chosen[:, 0].any()
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(batch["labels"][chosen], blocks[chosen])
    became_mask = (batch["input_ids"] == 4) & chosen
    kept = (batch["input_ids"] == blocks) & chosen
    assert became_mask.sum().item() / chosen.sum().item() == pytest.approx(0.8, abs=0.03)
    assert kept.sum().item() / chosen.sum().item() == pytest.approx(0.1, abs=0.03)
    assert torch.equal(batch["input_ids"][~chosen], blocks[~chosen])


def test_mlm_masks_are_a_function_of_the_generator(mlm):
    blocks = torch.randint(5, 100, (4, 32), generator=torch.Generator().manual_seed(0))
    a = mlm.collate(blocks, torch.Generator().manual_seed(7))
    b = mlm.collate(blocks, torch.Generator().manual_seed(7))
    c = mlm.collate(blocks, torch.Generator().manual_seed(8))
    assert torch.equal(a["input_ids"], b["input_ids"]) and not torch.equal(a["labels"], c["labels"])


def test_whole_word_masking_takes_every_piece_of_a_word(monkeypatch):
    import numpy as np

    from ptcli.processing import tokenizers

    monkeypatch.setattr(tokenizers, "continuation_mask", lambda tok: np.arange(100) >= 50, raising=False)
    objective = MaskedLM(whole_word=True, mask_prob=0.3)
    objective.bind(FakeTokenizer())
    # words: [w10 ##p60 ##p61] [w11] [w12 ##p62] ... repeated
    row = [10, 60, 61, 11, 12, 62] * 10
    blocks = torch.tensor([row] * 32)
    chosen = objective.collate(blocks, torch.Generator().manual_seed(0))["labels"] != -100
    assert chosen.any()
    for r in range(32):
        for start, end in ((0, 3), (4, 6)):
            for k in range(10):
                piece = chosen[r, 6 * k + start: 6 * k + end]
                assert piece.all() or not piece.any()
