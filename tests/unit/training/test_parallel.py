"""The process group helpers, model wrapping and FSDP sharding units, in one process."""

import pytest

torch = pytest.importorskip("torch")

from ptcli.models.modules import unwrap  # noqa: E402
from ptcli.training.parallel import Dist  # noqa: E402


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


@pytest.mark.parametrize(("family", "blocks"), [("gpt2", "GPT2Block"), ("bert", "BertLayer"), ("t5", "T5Block"),
                                                ("llama", "LlamaDecoderLayer")])
def test_fsdp_shards_each_transformer_block_and_leaves_embeddings_to_the_root(family, blocks):
    import transformers

    from ptcli.training.parallelize import shard_units

    configs = {
        "gpt2": (transformers.GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=50), transformers.GPT2LMHeadModel),
        "bert": (transformers.BertConfig(num_hidden_layers=3, hidden_size=16, num_attention_heads=2,
                                         intermediate_size=32, vocab_size=50), transformers.BertForMaskedLM),
        "t5": (transformers.T5Config(num_layers=3, num_decoder_layers=3, d_model=16, d_kv=8, d_ff=32, num_heads=2,
                                     vocab_size=50), transformers.T5ForConditionalGeneration),
        "llama": (transformers.LlamaConfig(num_hidden_layers=3, hidden_size=16, num_attention_heads=2,
                                           intermediate_size=32, vocab_size=50), transformers.LlamaForCausalLM),
    }
    config, cls = configs[family]
    units = shard_units(cls(config))
    assert {type(u).__name__ for u in units} == {blocks}
    assert len(units) == (6 if family == "t5" else 3)


def test_shard_units_falls_back_to_the_longest_module_list():
    from ptcli.training.parallelize import shard_units

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(4, 4)
            self.heads = torch.nn.ModuleList([torch.nn.Linear(4, 4)])
            self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])

    net = Net()
    assert shard_units(net) == list(net.layers)


def test_peer_failures_become_one_clear_error_naming_the_checkpoint(tmp_path):
    from ptcli.errors import RunFailure
    from ptcli.training.failures import peer_failure

    (tmp_path / "checkpoints" / "step-00000010").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-00000010" / "state.json").write_text("{}")
    dist = Dist(rank=1, world=4, enabled=True, strategy="ddp")
    gloo = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                        "[127.0.0.1]:4018. This is typically caused by a remote worker crashing")
    failure = peer_failure(gloo, dist, tmp_path)
    assert isinstance(failure, RunFailure)
    text = failure.message()
    assert "process 1 of 4: another process of this job died, hung or became unreachable " \
           "(Connection closed by peer [127.0.0.1]:4018)" in text
    assert "step-00000010, is intact" in text and f"train.resume=auto hydra.run.dir={tmp_path}" in text
    assert peer_failure(ValueError("bad value"), dist, tmp_path) is None, "other errors pass through"
    assert peer_failure(gloo, Dist(), tmp_path) is None, "one process has no peers"


def test_compile_auto_is_on_only_for_long_fixed_shape_runs_with_a_compiler():
    from ptcli.training.parallelize import AUTO_COMPILE_STEPS, compile_decision

    long = AUTO_COMPILE_STEPS
    assert compile_decision("auto", long, True, False, "cpu", compiler=True) == (
        True, "compile: auto -> on (1,000 planned steps of fixed-shape batches)")
    on, why = compile_decision("auto", long - 1, True, False, "cpu", compiler=True)
    assert not on and "999 planned steps" in why
    assert not compile_decision("auto", None, True, False, "cpu", compiler=True)[0]  # no planned length
    on, why = compile_decision("auto", 10 * long, False, False, "cpu", compiler=True)
    assert not on and "change shape" in why  # padded batches of varying length would recompile
    on, why = compile_decision("auto", 10 * long, True, True, "cpu", compiler=True)
    assert not on and "DP-SGD" in why
    on, why = compile_decision("auto", 10 * long, True, False, "cpu", compiler=False)
    assert not on and "C++ compiler" in why
    assert compile_decision("auto", 10 * long, True, False, "cuda", compiler=False)[1].endswith("triton is not "
                                                                                                 "installed)")
    assert compile_decision(True, 1, False, False, "cpu") == (True, None)  # an explicit choice is obeyed, silently
    assert compile_decision(False, 10 * long, True, False, "cpu") == (False, None)
