"""`--optimizer fused_adam`: fairseq's `adam` update, computed by torch's fused AdamW kernel.

fairseq's Adam (the optimizer of every released OFA-CN run) updates the parameters one tensor at
a time in Python, about ten kernels per tensor: 0.195 s a step for `ofa_cn_base` on a 2-core CPU,
against 0.080 s for torch's fused AdamW (one pass over every tensor); on a GPU it is thousands of
kernel launches a step. Both compute the same update; fairseq adds eps to sqrt(v) before the bias
correction and torch after it, so torch's formula with eps_t = eps / sqrt(1 - b2^t) is fairseq's:

    fairseq:  p <- p - lr wd p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
    torch:    p <- p (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps_t)

with m, v the same moving averages and t the parameter's step count. Results agree with `adam` to
float rounding (tests/test_optim.py). The configuration fields are `adam`'s; the optimizer state
is torch's (tensor step counts), so a run resumed across the two optimizers needs
--reset-optimizer, which fairseq asks for. --memory-efficient-fp16 needs `adam` (fairseq refuses
this optimizer there: torch's kernel would keep fp16 moments for fp16 weights, fairseq's fp32).

fairseq's trainer scales the gradients twice before the step: by 1 / sample size
(`multiply_grads`) and by the clip coefficient. Each is a pass over every gradient (base, 2-core
CPU: ~20 ms each). This optimizer keeps both as one pending factor, as fairseq's FP16Optimizer
does with its loss scale, and hands it to the fused kernel as its gradient scale: no pass at all.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig


class FairseqAdamW(torch.optim.AdamW):
    """torch.optim.AdamW (fused where torch has the kernel) with fairseq's placement of eps.

    A step groups the parameters by the step count they are about to reach (the same for all,
    unless some had no gradient in earlier steps) and gives each group its eps_t.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float):
        params = list(params)
        device_types = {p.device.type for group in params
                        for p in (group["params"] if isinstance(group, dict) else [group])}
        fused = all(t in ("cpu", "cuda") for t in device_types) or None  # None: torch picks foreach/loop
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)
        for group in self.param_groups:
            group["fairseq_eps"] = eps
        self._steps_taken: dict[torch.Tensor, int] = {}  # a cache of state["step"]: no device sync a step

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._steps_taken = {}
        for group in self.param_groups:
            group.setdefault("fairseq_eps", group["eps"])

    def _taken(self, p: torch.Tensor) -> int:
        if p not in self._steps_taken:
            step = self.state.get(p, {}).get("step")
            self._steps_taken[p] = 0 if step is None else int(step)
        return self._steps_taken[p]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        by_step = []
        for group in groups:
            params_at: dict[int, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    params_at[self._taken(p) + 1].append(p)
            beta2 = group["betas"][1]
            for t, params in params_at.items():
                eps_t = group["fairseq_eps"] / math.sqrt(1 - beta2 ** t)
                by_step.append({**group, "params": params, "eps": eps_t, "t": t})
        self.param_groups = by_step  # AdamW.step iterates self.param_groups
        try:
            super().step()
        finally:
            self.param_groups = groups
        for group in by_step:  # after the step: a failed one leaves the counts as they were
            self._steps_taken.update(dict.fromkeys(group["params"], group["t"]))
        return loss


@dataclass
class FusedAdamConfig(FairseqAdamConfig):
    pass


@register_optimizer("fused_adam", dataclass=FusedAdamConfig)
class FusedFairseqAdam(FairseqAdam):
    """fairseq's `adam` (same options) with the update of `FairseqAdamW`."""

    def __init__(self, cfg: FusedAdamConfig, params):
        if cfg.fp16_adam_stats or cfg.tpu or cfg.use_old_adam:
            raise ValueError("optimizer fused_adam: fp16_adam_stats, tpu and use_old_adam are options of "
                             "optimizer adam only; use --optimizer adam for them")
        super(FairseqAdam, self).__init__(cfg)  # FairseqOptimizer's: FairseqAdam's would build its own Adam
        self._optimizer = FairseqAdamW(params, **self.optimizer_config)
        self._grad_factor: float | torch.Tensor = 1.0  # what the gradients are still to be multiplied by

    def multiply_grads(self, c):
        """Multiply the gradients by c (a number or a scalar tensor), lazily: in the next step.
        Until then `p.grad` is not multiplied; `clip_grad_norm` and `step` take the factor into
        account, and fairseq's trainer reads the gradients through them only."""
        self._grad_factor = self._grad_factor * c

    def _pending_factor(self) -> float | torch.Tensor | None:
        factor = self._grad_factor
        return factor if torch.is_tensor(factor) or factor != 1.0 else None

    def _apply_pending_factor(self) -> None:
        factor = self._pending_factor()
        if factor is not None:
            super().multiply_grads(factor)
            self._grad_factor = 1.0

    def step(self, closure=None, scale=1.0, groups=None):
        """The update with the gradients divided by `scale` (and multiplied by the pending factor)."""
        if scale != 1.0:
            self.multiply_grads(1.0 / scale)
        factor = self._pending_factor()
        if factor is None or not all(group["fused"] for group in self._optimizer.param_groups):
            self._apply_pending_factor()  # the unfused AdamW has no gradient scale
            return self._optimizer.step(closure)
        grad_scale = torch.as_tensor(factor, dtype=torch.float32)
        self._optimizer.grad_scale = grad_scale.reciprocal()  # the fused kernel divides by it
        try:
            result = self._optimizer.step(closure)
        finally:
            del self._optimizer.grad_scale
        self._grad_factor = 1.0
        return result

    def zero_grad(self):
        super().zero_grad()
        self._grad_factor = 1.0

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        super().load_state_dict(state_dict, optimizer_overrides)
        if optimizer_overrides and "eps" in optimizer_overrides:  # --optimizer-overrides '{"eps": ...}'
            for group in self.param_groups:
                group["fairseq_eps"] = optimizer_overrides["eps"]

    @torch.no_grad()
    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        """fairseq's clip_grad_norm_ (the norm of the per-tensor norms, then a scale by at most 1),
        with the norms in one foreach call (23 vs 50 ms for a base model's gradients on a 2-core
        CPU) and the scale joining the pending factor (see `multiply_grads`)."""
        params = [p for p in self.params if p.grad is not None]
        if not params or any(hasattr(p, "expert") for p in params):
            self._apply_pending_factor()
            return super().clip_grad_norm(max_norm, aggregate_norm_fn)  # fairseq's own rules for these
        grads = [p.grad.detach() for p in params]
        total_norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True).float()
        factor = self._pending_factor()
        if factor is not None:  # |c g| = |c| |g|; fairseq's factors are positive
            total_norm = total_norm * torch.as_tensor(factor, dtype=torch.float32, device=total_norm.device)
        if aggregate_norm_fn is not None:
            total_norm = aggregate_norm_fn(total_norm)
        if max_norm > 0:
            clip_coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
            self.multiply_grads(clip_coef)
        return total_norm

    @property
    def supports_memory_efficient_fp16(self):
        return False  # fairseq's Adam keeps fp32 moments for fp16 parameters; torch's keeps fp16 ones

    @property
    def supports_flat_params(self):
        return True
