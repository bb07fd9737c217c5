"""Differentially private training (``+privacy=dp``): DP-SGD through Opacus on the shared loop.

What changes, and nothing else does:
- batches are Poisson samples (``ptcli.data.loader.PoissonOrder``): each row joins a step with probability
  q = train.batch_size / N, which is what the accountant's subsampling amplification assumes;
- Opacus's ``GradSampleModule`` computes every example's gradient in backward hooks, and ``DPOptimizer`` clips each
  one to ``privacy.max_grad_norm``, sums them over the step's micro-batches (virtual batches), adds Gaussian noise of
  ``noise_multiplier x max_grad_norm`` once per step and divides by the *expected* batch size (dividing by the drawn
  size would leak it);
- the noise multiplier is found (Opacus's ``get_noise_multiplier``) so that the planned steps spend exactly
  ``privacy.epsilon`` at ``privacy.delta``; the epsilon spent so far is ``epsilon(step)``, logged every log step.

The loop's own token-weighted normalisation and ``train.max_grad_norm`` clipping act on the ordinary (non-private)
gradient, which the DP optimizer then replaces: they change nothing. The noise and the sampling come from seeded
generators (reproducible and resumable, Opacus's default non-secure mode), fine for research and audits; a formal
release would need a cryptographic source for both.

The trap of BERT-like models (Opacus issue #841): their position ids are one ``(1, seq)`` row broadcast over the
batch, and per-example gradients of the position embeddings then fail. Models whose forward takes ``position_ids``
get them expanded per example (a forward pre-hook); for others the position embeddings are frozen. Both are logged.
"""

from __future__ import annotations

import contextlib
import inspect

from ptcli.errors import PtcliError


class Privacy:
    """The run's DP-SGD settings: noise multiplier, sample rate, planned steps, and the epsilon they spend."""

    def __init__(self, settings, n_train: int, batch_size: int, planned_steps: int, log):
        self.settings, self.delta = settings, float(settings.delta)
        self.sample_rate = batch_size / n_train
        self.steps, self.batch_size, self.n_train = planned_steps, batch_size, n_train
        if self.sample_rate >= 1:
            raise PtcliError(f"+privacy=dp samples each step's batch from the training rows, but train.batch_size="
                             f"{batch_size} is not below their number ({n_train})",
                             fix="Lower train.batch_size (DP-SGD's privacy comes from sampling a fraction)")
        if self.delta >= 1 / n_train:
            raise PtcliError(f"privacy.delta={self.delta:g} is not below 1/N = {1 / n_train:.2g} for {n_train} "
                             "training rows: a mechanism that publishes one row in full would meet it",
                             fix=f"set privacy.delta below {1 / n_train:.2g} (1e-5 or 1/(10 N) are usual)")
        if settings.noise_multiplier is not None:
            self.noise_multiplier = float(settings.noise_multiplier)
        else:
            from opacus.accountants.utils import get_noise_multiplier

            with quiet():
                self.noise_multiplier = float(get_noise_multiplier(
                    target_epsilon=float(settings.epsilon), target_delta=self.delta, sample_rate=self.sample_rate,
                    steps=planned_steps, accountant=settings.accountant, epsilon_tolerance=0.01))
        log(f"privacy: DP-SGD, noise multiplier {self.noise_multiplier:.4f}, per-example clipping at "
            f"{settings.max_grad_norm:g}, Poisson sample rate {self.sample_rate:.5f} ({batch_size} of {n_train} rows "
            f"expected per step), {planned_steps} planned steps: epsilon {self.epsilon(planned_steps):.3f} at "
            f"delta {self.delta:g} ({settings.accountant} accountant)")

    def epsilon(self, steps: int) -> float:
        """The epsilon spent after ``steps`` noisy steps (Opacus's accountant over this run's constant settings)."""
        if steps <= 0:
            return 0.0
        accountant = accountant_for(self.settings.accountant)
        accountant.history = [(self.noise_multiplier, self.sample_rate, int(steps))]
        with quiet():
            return float(accountant.get_epsilon(delta=self.delta))

    def step_metrics(self, step: int) -> dict:
        return {"epsilon": self.epsilon(step)}

    def facts(self, steps: int) -> dict:
        """What summary.json and the model card record: enough to recompute epsilon with any accountant."""
        return {"privacy": {"method": "dp-sgd", "epsilon": round(self.epsilon(steps), 6), "delta": self.delta,
                            "target_epsilon": self.settings.epsilon, "noise_multiplier": self.noise_multiplier,
                            "max_grad_norm": float(self.settings.max_grad_norm), "sample_rate": self.sample_rate,
                            "expected_batch_size": self.batch_size, "training_rows": self.n_train, "steps": steps,
                            "planned_steps": self.steps, "accountant": self.settings.accountant,
                            "sampling": "poisson"}}

    def wrap_model(self, module, log):
        """``module`` with per-example gradients (Opacus's hooks), its position ids made per-example first."""
        import warnings

        from opacus import GradSampleModule

        # Opacus's full backward hooks on the first layer see no input that requires a gradient (token ids): torch
        # says so once per run, and it is expected.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
        per_example_positions(module, log)
        try:
            wrapped = GradSampleModule(module, batch_first=True, loss_reduction="sum", strict=True)
        except Exception as e:  # opacus's validators: a module whose per-example gradient is not defined
            raise PtcliError(f"Opacus cannot compute per-example gradients for this model: {str(e).splitlines()[0]}",
                             fix="Use a model without batch normalisation (BERT, MiniLM, DistilBERT, GPT-2 "
                                 "classifiers work), or freeze the offending layers") from None
        return wrapped

    def accumulate(self, optimizer) -> None:
        """After each micro-batch's backward but the step's last: clip its per-example gradients into the running
        sum and free them, so that memory holds one micro-batch's per-example gradients, not the virtual batch's."""
        optimizer.clip_and_accumulate()
        for p in optimizer.params:
            p.grad_sample = None

    def wrap_optimizer(self, optimizer):
        return _ExpectedBatchOptimizer(optimizer, noise_multiplier=self.noise_multiplier,
                                       max_grad_norm=float(self.settings.max_grad_norm),
                                       expected_batch_size=self.batch_size, loss_reduction="sum")


@contextlib.contextmanager
def quiet():
    """Opacus's RDP analysis warns when the best Renyi order is at an end of the range it tries (epsilon is still
    bounded)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")
        yield


def accountant_for(name: str):
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


def per_example_positions(module, log) -> None:
    """Opacus #841: give the model per-example ``position_ids`` (a forward pre-hook), or freeze its position
    embeddings when its forward takes none."""
    import torch

    from ptcli.models.modules import hf_members

    for model in hf_members(module).values() or [module]:
        positions = [(n, p) for n, p in model.named_parameters()
                     if p.requires_grad and ("position_embeddings" in n or n.endswith("wpe.weight"))]
        if not positions:
            continue
        if "position_ids" in inspect.signature(model.forward).parameters:
            def expand(_module, args, kwargs):
                ids = kwargs.get("input_ids")
                if kwargs.get("position_ids") is None and ids is not None and ids.dim() == 2:
                    kwargs["position_ids"] = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
                return args, kwargs

            model.register_forward_pre_hook(expand, with_kwargs=True)
            log("privacy: position_ids are expanded per example (Opacus #841), the position embeddings train")
        else:
            for _, p in positions:
                p.requires_grad_(False)
            log(f"privacy: {type(model).__name__} takes no position_ids, so its position embeddings are frozen "
                "(Opacus #841: broadcast positions have no per-example gradient)")


def _ExpectedBatchOptimizer(optimizer, **kwargs):
    """Opacus's DPOptimizer, dividing the noisy sum by the expected batch size however many micro-batches (and
    backward passes) the step had; an empty Poisson draw is a step of noise alone."""
    import torch
    from opacus.optimizers import DPOptimizer

    class ExpectedBatch(DPOptimizer):
        def scale_grad(self):
            for p in self.params:
                p.grad /= self.expected_batch_size

        def pre_step(self, closure=None):
            for p in self.params:
                if getattr(p, "grad_sample", None) is None:  # no example this step: zero per-example rows
                    p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            return super().pre_step(closure)

    return ExpectedBatch(optimizer, **kwargs)


def card_section(facts: dict) -> str:
    """The model folder's README.md section on what privacy this model has."""
    p = facts["privacy"]
    return (
        "\n## Differential privacy\n\n"
        f"Trained with DP-SGD (ptcli `+privacy=dp`, Opacus): (epsilon = {p['epsilon']:.3f}, delta = {p['delta']:g})"
        f"-differential privacy for each training row ({p['accountant'].upper()} accountant).\n\n"
        "| setting | value |\n|---|---|\n"
        f"| noise multiplier | {p['noise_multiplier']:.4f} |\n"
        f"| per-example clipping norm | {p['max_grad_norm']:g} |\n"
        f"| sampling | Poisson, rate {p['sample_rate']:.6f} ({p['expected_batch_size']} of "
        f"{p['training_rows']} rows expected per step) |\n"
        f"| steps | {p['steps']} |\n\n"
        "The guarantee covers the rows of the training data; the weights this model started from, its tokenizer "
        "and the validation rows used for model selection are outside it. The noise and the batches were drawn "
        "from seeded pseudo-random generators.\n")
