"""Muon (fp32 Newton-Schulz), the Muon/AdamW split, schedule and EMA."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from wallwm.trainer.optim import EMA, Muon, MuonAdamW, newton_schulz, split_params, warmup_cosine


def test_newton_schulz_orthogonalises():
    g = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    o = newton_schulz(g)
    s = torch.linalg.svdvals(o)
    assert o.shape == g.shape and s.min() > 0.5 and s.max() < 1.5  # U S' V^T, S' ~ [0.5, 1.5]
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = torch.nn.functional.cosine_similarity(o.flatten(), (u @ vh).flatten(), dim=0)
    assert cos > 0.95


def test_matches_torch_muon_update_rule():
    torch.manual_seed(0)
    w = torch.randn(48, 24)
    ours_p = nn.Parameter(w.clone())
    ref_p = nn.Parameter(w.clone())
    ours = Muon(
        [ours_p], lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw", ns_dtype=torch.float32
    )
    ref = torch.optim.Muon([ref_p], lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for step in range(5):
        g = torch.randn(48, 24, generator=torch.Generator().manual_seed(step))
        ours_p.grad, ref_p.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    # identical rule; only the orthogonalisation dtype differs (fp32 here, bf16 in torch)
    rel = (ours_p - ref_p).norm() / (ref_p - w).norm()
    assert rel < 0.05


def test_muon_rejects_non_matrices_and_split_rule():
    with pytest.raises(ValueError, match="2-D"):
        Muon([nn.Parameter(torch.zeros(3))])
    model = nn.ModuleDict(
        {
            "embed": nn.Embedding(10, 8),
            "hidden": nn.Linear(8, 8),
            "norm": nn.LayerNorm(8),
            "head": nn.Linear(8, 2),
        }
    )
    muon, adamw, backbone = split_params(model)
    assert backbone == []
    assert [p.shape for p in muon] == [torch.Size([8, 8])]
    assert len(adamw) == 1 + 1 + 2 + 2  # embedding, hidden bias, norm weight+bias, head weight+bias


def test_training_resumes_exactly_from_state_dicts():
    class Net(nn.Module):  # named like a real model: input projection, hidden, head
        def __init__(self):
            super().__init__()
            self.proj_in = nn.Linear(4, 32)
            self.hidden = nn.Linear(32, 32)
            self.head = nn.Linear(32, 1)

        def forward(self, x):
            return self.head(torch.tanh(self.hidden(torch.tanh(self.proj_in(x)))))

    def make():
        torch.manual_seed(1)
        return Net()

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def run(model, opt, ema, steps, start=0):
        losses = []
        for step in range(start, start + steps):
            for g in opt.param_groups:
                g["lr"] = 2e-2 * warmup_cosine(step, 5, 40)
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema.update(model)
            losses.append(loss.item())
        return losses

    model = make()
    opt, ema = MuonAdamW(model, lr=2e-2), EMA(model, 0.9)
    straight = run(model, opt, ema, 40)
    assert straight[-1] < 0.5 * straight[0]

    model2 = make()
    opt2, ema2 = MuonAdamW(model2, lr=2e-2), EMA(model2, 0.9)
    first = run(model2, opt2, ema2, 20)
    saved = copy.deepcopy(
        {"model": model2.state_dict(), "opt": opt2.state_dict(), "ema": ema2.state_dict()}
    )
    model3 = make()
    opt3, ema3 = MuonAdamW(model3, lr=2e-2), EMA(model3, 0.5)
    model3.load_state_dict(saved["model"])
    opt3.load_state_dict(saved["opt"])
    ema3.load_state_dict(saved["ema"])
    rest = run(model3, opt3, ema3, 20, start=20)
    assert first + rest == pytest.approx(straight, rel=0, abs=0)  # bit-exact continuation
    ema3.copy_to(model3)
    assert all(torch.equal(ema3.shadow[k], v) for k, v in model3.state_dict().items())


def test_ema_warms_up_and_forgets_the_initial_weights():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, 0.999)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): mostly the live weights
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(600):
        ema.update(model)
    # a fixed 0.999 would leave 0.999 ** 600 = 55 % of the initial (zero) weights
    assert float(ema.shadow["weight"].min()) > 0.99
    assert ema.current_decay() == pytest.approx(601 / 610)  # still warming up
    restored = EMA(model, 0.999)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 600
    restored.load_state_dict({"decay": 0.999, "shadow": ema.shadow})  # an older checkpoint
    assert restored.current_decay() == pytest.approx(0.999)  # capped once warmed up


def test_schedule_shape():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.55)


def test_batched_newton_schulz_equals_matrix_by_matrix():
    g = torch.randn(5, 48, 24, generator=torch.Generator().manual_seed(3))
    stacked = newton_schulz(g)
    for i in range(5):
        assert torch.allclose(stacked[i], newton_schulz(g[i]), atol=1e-5)


def test_same_shape_groups_follow_the_per_matrix_rule():
    """Matrices of two shapes updated together, as each alone (ours in fp32, torch's Muon)."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(32, 16), (32, 16), (16, 64), (32, 16)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grouped = [nn.Parameter(w.clone()) for w in start]
    alone = [nn.Parameter(w.clone()) for w in start]
    torchs = [nn.Parameter(w.clone()) for w in start]
    kw = {"lr": 0.02, "weight_decay": 0.1, "adjust_lr_fn": "match_rms_adamw"}
    optimizers = [Muon(grouped, ns_dtype=torch.float32, **kw)]
    optimizers += [Muon([p], ns_dtype=torch.float32, **kw) for p in alone]
    optimizers += [torch.optim.Muon([p], **kw) for p in torchs]
    for _ in range(4):
        for params in zip(grouped, alone, torchs, strict=True):
            grad = torch.randn(params[0].shape, generator=gen)
            for p in params:
                p.grad = grad.clone()
        for o in optimizers:
            o.step()
    for g, a, t, w in zip(grouped, alone, torchs, start, strict=True):
        assert torch.allclose(g, a, atol=1e-6)
        assert (g - t).norm() / (t - w).norm() < 0.05  # torch orthogonalises in bf16
