"""`--optimizer fused_adam` computes fairseq's `adam` update (eps before the bias correction,
decoupled weight decay), keeps doing so across a state-dict round trip and when some parameters
skip steps, and is built by fairseq from the same options as `adam`."""

from __future__ import annotations

import copy

import pytest
import torch
from fairseq import optim
from omegaconf import OmegaConf

from ofa_cn.train.optim import FusedFairseqAdam

OPTIONS = dict(lr=[3e-2], adam_betas="(0.9, 0.98)", adam_eps=1e-3, weight_decay=0.05, tpu=False)


def _cfg(name, **options):
    """The optimizer section of a fairseq config, as a run's YAML or command line gives it."""
    return OmegaConf.create({"_name": name, **OPTIONS, **options})


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                      reason="needs CUDA")])


def _params(seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g).to(device)) for shape in ((7, 5), (11,), (3, 4, 2))]


def _grads(step, params):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g).to(p.device) for p in params]


def _run(optimizer, params, steps, skip=lambda step, i: False, start=0):
    for step in range(start, start + steps):
        for i, (p, grad) in enumerate(zip(params, _grads(step, params))):
            p.grad = None if skip(step, i) else grad * (1 + step)  # growing gradients: v keeps changing
        optimizer.step()
    return [p.detach().clone() for p in params]


def _pair(device="cpu", **options):
    ours, theirs = _params(device=device), _params(device=device)
    fused = optim.build_optimizer(_cfg("fused_adam", **options), ours)
    plain = optim.build_optimizer(_cfg("adam", **options), theirs)
    assert isinstance(fused, FusedFairseqAdam) and type(plain).__name__ == "FairseqAdam"
    return (fused, ours), (plain, theirs)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_matches_fairseq_adam(device):
    (fused, ours), (plain, theirs) = _pair(device)
    assert fused.optimizer.param_groups[0]["fused"]  # torch's one-kernel update, not its per-tensor loop
    start = [p.detach().clone() for p in ours]
    got, expected = _run(fused, ours, 6), _run(plain, theirs, 6)
    for a, b, s in zip(got, expected, start):
        assert (b - s).abs().max() > 0.05  # the steps moved the parameters; eps (1e-3) matters at v ~ 1e-2
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_eps_is_placed_as_fairseq_places_it():
    # With one step and a huge eps the two placements differ by sqrt(1 - b2) = 0.14 in the update.
    (fused, ours), (plain, theirs) = _pair(adam_eps=10.0, weight_decay=0.0)
    start = ours[0].detach().clone()
    got, expected = _run(fused, ours, 1), _run(plain, theirs, 1)
    grad = _grads(0, ours)[0]
    fairseq_update = -0.03 * (1 - 0.98) ** 0.5 / (1 - 0.9) * (0.1 * grad) / (((1 - 0.98) * grad**2).sqrt() + 10.0)
    torch.testing.assert_close(got[0] - start, fairseq_update, rtol=1e-4, atol=1e-7)  # torch's placement: 14 % off
    torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_parameters_that_skip_steps_keep_their_own_count(device):
    skip = lambda step, i: (i == 1 and step in (0, 3)) or (i == 2 and step == 2)  # noqa: E731
    (fused, ours), (plain, theirs) = _pair(device)
    got, expected = _run(fused, ours, 6, skip), _run(plain, theirs, 6, skip)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert [int(fused.optimizer.state[p]["step"]) for p in ours] == [6, 4, 5]


def test_resumes_from_its_state_dict():
    (fused, ours), _ = _pair()
    _run(fused, ours, 3)
    saved = copy.deepcopy(fused.state_dict())
    snapshot = [p.detach().clone() for p in ours]
    continued = _run(fused, ours, 3, start=3)

    params = [torch.nn.Parameter(p.clone()) for p in snapshot]
    resumed = optim.build_optimizer(_cfg("fused_adam"), params)
    resumed.load_state_dict(saved)
    for a, b in zip(_run(resumed, params, 3, start=3), continued):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_options_adam_alone_has_are_refused():
    with pytest.raises(ValueError, match="fp16_adam_stats, tpu and use_old_adam are options of optimizer adam"):
        optim.build_optimizer(_cfg("fused_adam", fp16_adam_stats=True), _params())


def _set_grads(params, step=0):
    for p, grad in zip(params, _grads(step, params)):
        p.grad = grad
    params[1].grad = None  # a parameter without a gradient this step


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("max_norm", [0.0, 0.5, 1e6])  # only the norm; clipped; not clipped
@pytest.mark.parametrize("factor", [0.25, torch.tensor(0.25)])  # fairseq's 1 / sample size: a number or a tensor
def test_the_trainers_scale_clip_and_step_match_fairseq(max_norm, factor, device):
    """multiply_grads, clip_grad_norm, step: the trainer's sequence gives fairseq adam's norm and
    update, while the gradients themselves are left as they are (both scales join the step)."""
    from fairseq.utils import clip_grad_norm_

    (fused, ours), (plain, theirs) = _pair(device)
    _set_grads(ours)
    _set_grads(theirs)
    before = [None if p.grad is None else p.grad.clone() for p in ours]
    start = [p.detach().clone() for p in ours]
    fused.multiply_grads(factor)
    plain.multiply_grads(factor)
    norm = fused.clip_grad_norm(max_norm)
    expected = clip_grad_norm_(theirs, max_norm)
    torch.testing.assert_close(norm, expected, rtol=1e-6, atol=0)
    assert float(norm) > 1
    for p, grad in zip(ours, before):  # no pass over the gradients yet
        assert (p.grad is None) == (grad is None) and (grad is None or torch.equal(p.grad, grad))
    fused.step()
    plain.step()
    for a, b, s in zip(ours, theirs, start):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    moved = [float((a - s).abs().max()) for a, s in zip(ours, start)]
    assert moved[1] == 0 and min(moved[0], moved[2]) > 1e-3


@pytest.mark.parametrize("fused_kernel", [True, False])
def test_a_pending_factor_is_applied_once_and_dropped_by_zero_grad(fused_kernel):
    (fused, ours), (plain, theirs) = _pair()
    for group in fused.optimizer.param_groups:
        group["fused"] = fused_kernel  # False: torch's foreach AdamW, which takes no gradient scale
    fused.multiply_grads(3.0)
    fused.zero_grad()  # a skipped update (fairseq: overflow, OOM) forgets the factor with the gradients
    for step in range(2):
        for optimizer, params in ((fused, ours), (plain, theirs)):
            _set_grads(params, step)
            optimizer.multiply_grads(0.5)
            optimizer.clip_grad_norm(1.0)
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_step_with_scale_divides_the_gradients():
    (fused, ours), (plain, theirs) = _pair()
    _set_grads(ours)
    _set_grads(theirs)
    fused.step(scale=4.0)
    plain.step(scale=4.0)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
