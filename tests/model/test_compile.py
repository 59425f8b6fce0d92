"""OFAModel.compile_layers: compiled layers compute what the eager ones compute, in one graph each
(the hand-written CPU paths step aside under torch.compile), and task.compile_layers turns it on.

The "aot_eager" backend traces exactly as inductor does but runs the traced graph with torch's own
kernels, so the test needs no C++ compiler and takes seconds.
"""

from __future__ import annotations

import copy

import torch
import torch._dynamo
from torch._dynamo.utils import counters

import ofa_cn.tasks.base as base
from helpers import randomize_, tiny_config
from ofa_cn.model.ofa import OFAModel


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 30000, (2, 6), generator=g)
    src[:, 0], src[:, -1] = 0, 2
    prev = torch.randint(4, 30000, (2, 5), generator=g)
    prev[:, 0] = 0
    target = torch.randint(4, 30000, (2, 5), generator=g)
    return dict(src_tokens=src, src_lengths=None, prev_output_tokens=prev,
                patch_images=torch.randn(2, 3, 48, 48, generator=g)), target


def _loss_and_grads(model, net_input, target):
    model.train()
    model.zero_grad(set_to_none=True)
    logits, _ = model(**net_input)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_layers_match_eager_without_graph_breaks():
    eager = randomize_(OFAModel.from_config(tiny_config()), seed=2)
    compiled = copy.deepcopy(eager)
    compiled.compile_layers(backend="aot_eager")
    keys = list(eager.state_dict())
    assert list(compiled.state_dict()) == keys  # checkpoints keep their keys
    net_input, target = _batch()
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        expected = eager.eval()(**net_input)[0]
        got = compiled.eval()(**net_input)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    loss_e, grads_e = _loss_and_grads(eager, net_input, target)
    loss_c, grads_c = _loss_and_grads(compiled, net_input, target)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=1e-6)
    assert grads_c.keys() == grads_e.keys() and len(grads_e) > 100
    for name, grad in grads_e.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert counters["stats"]["unique_graphs"] > 0  # the layers really went through dynamo
    assert dict(counters["graph_break"]) == {}  # e.g. the oneDNN linear or the folded stem in a trace


def test_task_option_compiles_the_layers(monkeypatch):
    calls = []
    monkeypatch.setattr(OFAModel, "compile_layers", lambda self, **kw: calls.append(self))
    model = OFAModel.from_config(tiny_config())
    monkeypatch.setattr(base.FairseqTask, "build_model", lambda self, cfg, from_checkpoint=False: model)
    task = object.__new__(base.OFATask)
    for flag, expected in ((False, []), (True, [model])):
        task.cfg = base.OFATaskConfig(compile_layers=flag)
        assert task.build_model(None) is model
        assert calls == expected
