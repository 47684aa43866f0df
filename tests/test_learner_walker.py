"""LocalLearner on the models people write (issue 24, items 1 and 2): call order, shared and
parametrized weights, frozen parameters, skips, dtype and device of its tensors, side-effect-free
``updates``, ``step``'s logits, ``state_dict`` and LR schedulers. Each test names what breaks it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from localstdp import LocalLearner
from localstdp.errors import ConfigError
from localstdp.model_learner import StepResult
from localstdp.rules.association import pairwise_codes

DT = torch.float64


def data(n=6, d=16, k=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


class HeadFirst(nn.Module):
    """The head is defined before the body: named_modules() lists it first, forward calls it last."""

    def __init__(self, skip: str = ""):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(8, 3)
        self.mid = nn.Linear(12, 8)
        self.body = nn.Linear(16, 12)
        self.act1, self.act2 = nn.Sigmoid(), nn.Sigmoid()
        self.skip = skip

    def forward(self, x):
        h = self.act1(self.body(x))
        a = self.act2(self.mid(h))
        if self.skip == "add":
            a = a + h[:, :8]
        elif self.skip == "inplace":
            a += h[:, :8]
        z = self.head(a)
        return z + x[:, :3] if self.skip == "output" else z


def body_first(model: HeadFirst) -> nn.Sequential:
    return nn.Sequential(copy.deepcopy(model.body), nn.Sigmoid(), copy.deepcopy(model.mid), nn.Sigmoid(),
                         copy.deepcopy(model.head))


@pytest.mark.parametrize("opts", [{}, {"association": "pairs"}, {"association": "random", "center": 0.9}])
def test_layers_are_taken_in_call_order_not_definition_order(opts):
    """Broken walker (named_modules order): the head-first model is refused or its pairs codes land on
    the head's 8 units; here it trains bit for bit like the same layers in a Sequential."""
    model = HeadFirst()
    seq = body_first(model)
    a, b = LocalLearner(model, 3, lr=0.4, **opts), LocalLearner(seq, 3, lr=0.4, **opts)
    for s in range(3):
        x, y = data(seed=s)
        assert a.step(x, y) == b.step(x, y)
    assert a.names == ["body", "mid", "head"]
    assert torch.equal(model.body.weight, seq[0].weight) and torch.equal(model.head.bias, seq[4].bias)
    if opts.get("association") == "pairs":
        assert torch.equal(a.associations[0].isnan(), pairwise_codes(12, 3).isnan())


class Swap(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.s1, self.s2 = nn.Sigmoid(), nn.Sigmoid()
        self.swapped = False

    def forward(self, x):
        first, second = (self.b, self.a) if self.swapped else (self.a, self.b)
        return self.head(self.s2(second(self.s1(first(x)))))


def test_call_order_from_an_example_and_a_changed_order_is_refused():
    model = HeadFirst()
    learner = LocalLearner(model, 3, example=data()[0])
    assert learner.names == ["body", "mid", "head"] and learner.resolved and learner.steps == 0
    swap = Swap()
    learner = LocalLearner(swap, 3)
    learner.step(*data())
    swap.swapped = True
    with pytest.raises(ConfigError, match=r"another order than the first pass \(b, a, head\)"):
        learner.step(*data())


@pytest.mark.parametrize("skip,match", [
    ("add", r"^head \(Linear\) does not receive the output of Sigmoid.*residual"),
    ("inplace", r"^head \(Linear\) does not receive the output of Sigmoid.*in-place change"),
    ("output", r"HeadFirst's output is not the output of its last module"),
])
def test_residual_and_skip_connections_are_refused_with_the_module_named(skip, match):
    """Broken walker (no chain check): the skip is trained as if absent, activity leaves [0, 1]."""
    with pytest.raises(ConfigError, match=match):
        LocalLearner(HeadFirst(skip), 3).step(*data())
    with pytest.raises(ConfigError, match=match):
        LocalLearner(HeadFirst(skip), 3, mode="timing").updates(*data())


def test_shared_parameters_and_weight_reparametrizations_are_refused_naming_the_module():
    a, b = nn.Linear(16, 16), nn.Linear(16, 3)
    tied = nn.Linear(16, 16)
    tied.weight = a.weight
    with pytest.raises(ConfigError, match=r"^0 and 2 share one Parameter \(0.weight, 2.weight\)"):
        LocalLearner(nn.Sequential(a, nn.Sigmoid(), tied, nn.Sigmoid(), b), 3)
    new = nn.utils.parametrizations.weight_norm(nn.Linear(16, 3))
    with pytest.raises(ConfigError, match=r"^1 \(ParametrizedLinear\): its weight is parametrized"):
        LocalLearner(nn.Sequential(nn.Flatten(), new), 3)
    with pytest.warns(FutureWarning):
        old = nn.utils.weight_norm(nn.Linear(16, 3))
    with pytest.raises(ConfigError, match=r"^1 \(Linear\): the hook-based nn.utils.weight_norm recomputes its weight"):
        LocalLearner(nn.Sequential(nn.Flatten(), old), 3)


def test_frozen_bias_and_frozen_weight_are_honoured():
    """Each frozen parameter stays bit-identical; the trainable one moves exactly as in the all-trainable
    learner (a layer's weight and bias changes do not depend on each other within one step)."""
    x, y = data()
    torch.manual_seed(1)
    ref = nn.Sequential(nn.Linear(16, 12), nn.Sigmoid(), nn.Linear(12, 3))
    frozen_b, frozen_w = copy.deepcopy(ref), copy.deepcopy(ref)
    frozen_b[0].bias.requires_grad_(False)
    frozen_w[2].weight.requires_grad_(False)  # a frozen weight with a trainable bias: trained, not refused
    learners = [LocalLearner(m, 3, lr=0.7) for m in (ref, frozen_b, frozen_w)]
    before = [copy.deepcopy(m.state_dict()) for m in (ref, frozen_b, frozen_w)]
    ups = learners[1].updates(x, y)
    assert torch.equal(ups[0][1], torch.zeros(12)) and ups[0][0].abs().sum() > 0
    for learner in learners:
        learner.step(x, y)
    assert torch.equal(frozen_b[0].bias, before[1]["0.bias"]) and torch.equal(frozen_b[0].weight, ref[0].weight)
    assert torch.equal(frozen_w[2].weight, before[2]["2.weight"]) and torch.equal(frozen_w[2].bias, ref[2].bias)
    assert not torch.equal(ref[2].bias, before[0]["2.bias"])


def test_targets_are_in_the_model_dtype():
    """Broken: float32 targets in a float64 model (0.90000004)."""
    model = body_first(HeadFirst()).double()
    learner = LocalLearner(model, 3)
    t = learner.targets(2, torch.tensor([1]))
    assert t.dtype == DT and t[0, 1].item() == 0.9 and t[0, 0].item() == 0.1


def test_learner_tensors_follow_the_model_device():
    """Broken: association tables and running means stay where the learner was built."""
    model = body_first(HeadFirst())
    learner = LocalLearner(model, 3, center=0.9)
    learner.step(*data())
    model.to("meta")  # a device this machine has: what model.to("cuda") does to the learner's tensors
    learner._follow()
    assert {A.device.type for A in learner.associations + learner.pre_means} == {"meta"}
    other = LocalLearner(body_first(HeadFirst()), 3, center=0.9)
    other.step(*data())
    assert other.to("meta") is other and other.model[0].weight.device.type == "meta"
    assert {A.device.type for A in other.associations + other.pre_means} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_to_cuda_after_building_the_learner_trains_as_on_cpu():
    model = body_first(HeadFirst()).double()
    cpu = copy.deepcopy(model)
    a, b = LocalLearner(model, 3, center=0.9), LocalLearner(cpu, 3, center=0.9)
    x, y = data(dtype=DT)
    a.step(x, y), b.step(x, y)
    model.to("cuda")
    out = a.step(x.cuda(), y.cuda())
    ref = b.step(x, y)
    assert out.logits.device.type == "cuda" and out == pytest.approx(ref, rel=1e-9)
    torch.testing.assert_close(model[0].weight.cpu(), cpu[0].weight, rtol=1e-9, atol=1e-12)


def test_updates_has_no_side_effect():
    """Broken: updates() advanced the running means (center), so updates() then step() != step()."""
    x, y = data()
    ms = [body_first(HeadFirst()) for _ in range(2)]
    a, b = LocalLearner(ms[0], 3, center=0.9), LocalLearner(ms[1], 3, center=0.9)
    for s in range(2):
        a.updates(x, y)
        assert a.step(x, y) == b.step(x, y)
        x, y = data(seed=s + 1)
    assert all(torch.equal(u, v) for u, v in zip(ms[0].state_dict().values(), ms[1].state_dict().values()))
    assert all(torch.equal(u, v) for u, v in zip(a.pre_means, b.pre_means))


def test_step_returns_the_loss_as_before_and_the_logits_of_its_forward_pass():
    x, y = data()
    model = HeadFirst()
    before = copy.deepcopy(model)
    out = LocalLearner(model, 3).step(x, y)
    assert isinstance(out, StepResult) and isinstance(out, float) and out.loss == float(out) > 0
    torch.testing.assert_close(out.logits, before(x), rtol=0, atol=0)


def test_state_dict_is_flat_tensors_and_a_fresh_learner_continues_identically(tmp_path):
    from safetensors.torch import load_file, save_file

    model = HeadFirst()
    a = LocalLearner(model, 3, lr=0.3, center=0.9, association="random")
    a.step(*data())
    sd = a.state_dict()
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())
    assert sd["steps"].item() == 1 and sd["steps"].dtype == torch.int64 and sd["walker.order"].tolist() == [2, 1, 0]
    save_file(sd, tmp_path / "learner.safetensors")
    twin = copy.deepcopy(model)
    b = LocalLearner(twin, 3, lr=0.3, center=0.9, association="random", seed=7)  # other codes until loaded
    b.load_state_dict(load_file(tmp_path / "learner.safetensors"))
    assert b.names == ["body", "mid", "head"] and b.steps == 1
    for s in range(1, 3):
        assert a.step(*data(seed=s)) == b.step(*data(seed=s))
    assert all(torch.equal(u, v) for u, v in zip(model.state_dict().values(), twin.state_dict().values()))


def test_torch_lr_schedulers_and_callables_drive_eta():
    """LambdaLR(fn) on learner.optimizer equals the learner built with lr * fn(step); StepLR halves eta."""
    import warnings

    ms = [body_first(HeadFirst()) for _ in range(2)]
    a, b = LocalLearner(ms[0], 3, lr=1.0), LocalLearner(ms[1], 3, lr=0.25)
    sched = torch.optim.lr_scheduler.LambdaLR(a.optimizer, lambda step: 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        for s in range(2):
            assert a.step(*data(seed=s)) == b.step(*data(seed=s))
            sched.step()
    assert all(torch.equal(u, v) for u, v in zip(ms[0].state_dict().values(), ms[1].state_dict().values()))
    c = LocalLearner(body_first(HeadFirst()), 3, lr=0.8)
    step_lr = torch.optim.lr_scheduler.StepLR(c.optimizer, step_size=1, gamma=0.5)
    c.step(*data())
    step_lr.step()
    c.step(*data())
    assert c.params.eta == 0.4 and c.state_dict()["lr"].item() == 0.4


def test_rule_argument():
    assert type(LocalLearner(HeadFirst(), 3, rule="local")) is LocalLearner
    with pytest.raises(ConfigError, match="rule 'sgd': expected one of local, fa, dfa, drtp, pepita, ff"):
        LocalLearner(HeadFirst(), 3, rule="sgd")
    learner = LocalLearner(HeadFirst(), 3)
    assert type(copy.deepcopy(learner)) is LocalLearner
