"""The peer rules on a user's model: ``LocalLearner(model, rule="fa" | "dfa" | "drtp" | "pepita" | "ff")``.

Each rule runs the same math as its learner on the package MLP (the functions of dfa.py, pepita.py,
ff.py and fa.py's feedback Function), fed with what :mod:`localstdp.walker` records on the user's
model: every learnable layer's input ``pre`` and sigmoid activity ``post`` in call order, and the
model's output as the logits z^L. So the walker's refusals, call order, ``step`` (a
:class:`~localstdp.model_learner.StepResult` with the logits), ``state_dict`` and devices are those of
the local rule (:mod:`localstdp.model_learner`); an nn.Sequential copy of the package MLP trains
exactly as the MLP learner does (tests/test_peers_models.py).

  fa      backprop through the user's forward pass, each learnable layer after the first sending the
          error back through a fixed B^l instead of W^l^T (a forward hook puts fa's Function in place
          of the layer's output; parameter-free modules between layers backpropagate as usual)
  dfa     delta^l = (B^l e) * f'(z^l) from the recorded activity; e at the model's output
  drtp    delta^l = (B^l y*) * f'(z^l)
  pepita  two recorded passes, the second on x + F e (F: (input numel, K), reshaped to x)
  ff      goodness of every hidden layer's recorded activity, label embedded in the first K input
          features; each layer's input is RMS-normalised and detached by a forward pre-hook;
          ``predict_module()`` is the per-label goodness (``step``'s logits are None: the model's
          output is not ff's prediction)

Linear layers only: the peer rules here are defined on dense layers (a conv layer's feedback
matrices, projections and goodness are not), so a trainable nn.Conv2d is refused (docs/peers.md).
Settings: :class:`PeerParams` fields as keyword options; ``lr`` is the optimiser's learning rate.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as nnf

from ... import checks
from ...errors import ConfigError
from ...model_learner import ModelLearner, StepResult
from ..layerwise import units
from .base import FIXED_SALT, PeerLearner, add_grad, onehot, output_error
from .dfa import projected_deltas
from .fa import _FeedbackLinear
from .ff import embed_label, ff_losses, negative_labels, rms_normalise
from .params import PeerParams
from .pepita import pepita_updates


class ModelPeer(ModelLearner, PeerLearner):
    """A peer rule on any model of sigmoid nn.Linear layers (see the module docstring).

    Args: model, n_classes, lr (PeerParams.lr), seed (the fixed matrices and ff's negative labels),
    example (read the call order now), **options: any other PeerParams field."""

    def __init__(self, model: nn.Module, n_classes: int = 10, lr: float = 1e-3, *, seed: int = 0,
                 example: torch.Tensor | None = None, **options):
        self._check_args(model, n_classes, lr, seed)
        names = [f.name for f in dataclasses.fields(PeerParams) if f.name != "lr"]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"unknown {self.rule} option(s) {', '.join(unknown)}; expected lr or one of {', '.join(names)}")
        self._walk(model, n_classes, conv=False)
        self._params = [p for m in self.layers for p in m.parameters() if p.requires_grad]
        self.seed = seed
        PeerLearner.__init__(self, model, PeerParams(lr=lr, **options), n_classes, seed)
        self.device = self.layers[-1].weight.device
        if example is not None:
            self.resolve(example)

    @property
    def name(self) -> str:
        return self.rule

    def check_model(self, model) -> None:
        """The walker has checked it (sigmoid activities, Linear layers, no skips)."""

    def trained_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter of the learnable layers (ff never gives the output layer a grad)."""
        return self._params

    def _rebuild(self) -> None:
        """The fixed random matrices, drawn for the call order from the seed (as the MLP learner draws them)."""
        self.gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + FIXED_SALT)
        self.fixed.clear()
        self.make_fixed()

    def make_fixed(self) -> None:
        pass

    def _follow(self) -> None:
        self.device = self.layers[-1].weight.device
        for k, t in self.fixed.items():
            if t.device != self.device:
                self.fixed[k] = t.to(self.device)
        for p in self._params:
            for key, v in self.optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.ndim and v.device != p.device:
                    self.optimizer.state[p][key] = v.to(p.device)

    def _grad(self, layer: nn.Module, dW: torch.Tensor, db: torch.Tensor) -> None:
        """Add a hand-computed direction to the trainable parameters' .grad (frozen ones stay untouched)."""
        if layer.weight.requires_grad:
            add_grad(layer.weight, dW)
        if layer.bias is not None and layer.bias.requires_grad:
            add_grad(layer.bias, db)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One optimiser step on the rule's direction for the batch; returns its mean loss with ``.logits``.

        ``x`` and ``y`` are checked as the local rule's (:meth:`localstdp.LocalLearner.step`): a bad batch
        raises ArgumentError / ArgumentTypeError naming the argument, and nothing changes."""
        y = self._check_batch(x, y)
        self.resolve(x)
        self._follow()
        y = y.to(self.device)
        self.zero_grad()
        self.logits = None
        loss = self.accumulate(x, y, 1.0 / len(y))
        self.optimizer.step()
        self.steps += 1
        return StepResult(loss / len(y), self.logits)

    def fixed_shapes(self, layers: list[nn.Module]) -> dict[str, tuple[int, ...]]:
        """The fixed random matrices of the rule for ``layers`` in call order: name -> shape."""
        return {}

    def _check_rule_state(self, state, layers: list[nn.Module]) -> None:
        for k, shape in self.fixed_shapes(layers).items():
            checks.state_tensor(state, f"peer.fixed.{k}", shape, what=f" (the fixed matrix {k})")
        rng = checks.state_tensor(state, "peer.rng", floating=False, what=" (the generator state)")
        try:
            torch.Generator().set_state(rng)
        except (RuntimeError, TypeError) as exc:
            checks.fail("state['peer.rng']", "a torch.Generator state (Generator.get_state())", f"{checks.got(rng)} "
                        f"({exc})")
        params = self.trained_parameters()
        for name in state:
            if not name.startswith("optim."):
                continue
            idx, _, key = name[len("optim."):].partition(".")
            if not idx.isdigit() or int(idx) >= len(params) or not key:
                checks.fail(f"state[{name!r}]", f"an entry optim.<i>.<key> with i < {len(params)} (the trained "
                            "parameters)", "another name")
            p = params[int(idx)]
            v = checks.state_tensor(state, name, floating=False)
            if (v.ndim and v.shape != p.shape) or (v.is_floating_point() and not bool(torch.isfinite(v).all())):
                checks.fail(f"state[{name!r}]", f"finite values of shape {tuple(p.shape)} (parameter {idx})",
                            checks.got(v))

    def _rule_state(self) -> dict[str, torch.Tensor]:
        return self.state_tensors()

    def _load_rule_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_tensors(state)


class ModelFA(ModelPeer):
    rule, forward_only = "fa", False

    def fixed_shapes(self, layers):
        # layer 0 sends nothing further back; B^l carries layer l's error to its input
        return {f"B{l}": (layers[l].weight.shape[1], layers[l].weight.shape[0]) for l in range(1, len(layers))}

    def make_fixed(self) -> None:
        for name, (rows, signal) in self.fixed_shapes(self.layers).items():
            self.feedback_matrix(name, rows, signal)

    def accumulate(self, x, y, scale, rows=None) -> float:
        def feedback(B):
            return lambda m, inputs, out: _FeedbackLinear.apply(inputs[0], m.weight, m.bias, B)

        hooks = [m.register_forward_hook(feedback(self.fixed[f"B{l}"])) for l, m in enumerate(self.layers) if l]
        try:
            with torch.enable_grad():
                out, _ = self.record(x)
                loss = nnf.cross_entropy(out, y, reduction="sum")
                (loss * scale).backward()
        finally:
            for h in hooks:
                h.remove()
        self.logits = out.detach()
        return float(loss.detach())


class ModelDFA(ModelPeer):
    rule, forward_only = "dfa", False

    def fixed_shapes(self, layers):
        return {f"B{l}": (units(layers[l]), self.n_classes) for l in range(len(layers) - 1)}

    def make_fixed(self) -> None:
        for name, (rows, signal) in self.fixed_shapes(self.layers).items():
            self.feedback_matrix(name, rows, signal)

    def signal(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return e

    @torch.no_grad()
    def accumulate(self, x, y, scale, rows=None) -> float:
        out, found = self.record(x)
        e = output_error(out, y)
        L = len(self.layers)
        deltas = projected_deltas([post for _, post in found[:-1]], self.signal(e, y),
                                  [self.fixed[f"B{l}"] for l in range(L - 1)])
        for layer, delta, (pre, _) in zip(self.layers, [*deltas, e], found):
            self._grad(layer, delta.t().mm(pre) * scale, delta.sum(0) * scale)
        self.logits = out
        return float(nnf.cross_entropy(out, y, reduction="sum"))


class ModelDRTP(ModelDFA):
    rule, forward_only = "drtp", True

    def signal(self, e: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return onehot(y, self.n_classes, e)


class ModelPEPITA(ModelPeer):
    rule, forward_only = "pepita", True

    def fixed_shapes(self, layers):
        return {"F": (layers[0].in_features, self.n_classes)}  # the input's size: what the first layer reads

    def make_fixed(self) -> None:
        n_in = self.layers[0].in_features
        self.random_matrix("F", (n_in, self.n_classes), self.params.input_scale * math.sqrt(6.0 / n_in))

    @torch.no_grad()
    def accumulate(self, x, y, scale, rows=None) -> float:
        F = self.fixed["F"]
        if x[0].numel() != F.shape[0]:
            checks.fail("x", f"inputs of {F.shape[0]} values per example (pepita adds F e to the input; the first "
                        "layer's in_features)", f"{x[0].numel()} (shape {tuple(x.shape)})")
        out, found = self.record(x)
        e = output_error(out, y)
        _, mod = self.record(x + e.mm(F.t()).view_as(x))
        ups = pepita_updates([p for _, p in found[:-1]], [p for p, _ in mod], [p for _, p in mod[:-1]], e)
        for layer, (dW, db) in zip(self.layers, ups):
            self._grad(layer, dW * scale, db * scale)
        self.logits = out
        return float(nnf.cross_entropy(out, y, reduction="sum"))


class ModelFF(ModelPeer):
    rule, forward_only = "ff", True

    def make_fixed(self) -> None:
        first = self.layers[0]
        if len(self.layers) < 2 or first.in_features <= self.n_classes:
            raise ConfigError(f"ff needs a hidden layer and more than {self.n_classes} input features, got "
                              f"{len(self.layers)} layer(s), {first.in_features} input features")

    def goodness(self, u: torch.Tensor, detach: bool) -> list[torch.Tensor]:
        """G^l of every hidden layer (per example) for the embedded input ``u``; every layer after the
        first reads its input RMS-normalised (``detach``: as a constant, so a layer learns from itself)."""
        def normalise(m, inputs):
            v = rms_normalise(inputs[0])
            return (v.detach() if detach else v,)

        hooks = [m.register_forward_pre_hook(normalise) for m in self.layers[1:-1]]
        try:
            _, found = self.record(u.detach() if detach else u)
        finally:
            for h in hooks:
                h.remove()
        return [(post * post).sum(1) for _, post in found[:-1]]

    def embed(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return embed_label(x, labels, self.n_classes).view_as(x)

    def accumulate(self, x, y, scale, rows=None) -> float:
        y_neg = negative_labels(y, self.n_classes, self.gen)
        with torch.enable_grad():
            g_pos = self.goodness(self.embed(x, y), True)
            g_neg = self.goodness(self.embed(x, y_neg), True)
            losses = ff_losses(g_pos, g_neg, [units(m) for m in self.layers[:-1]], self.params.ff_threshold)
            total = torch.stack(losses).sum()
            (total * scale).backward()
        return float(total.detach()) / len(losses)

    def predict_module(self) -> ModelFFScorer:
        """The module whose argmax is ff's prediction (what to evaluate and attack)."""
        return ModelFFScorer(self)


class ModelFFScorer(nn.Module):
    """ff's classifier on a user's model: ``forward(x)`` is the (B, K) total goodness of x with each
    label embedded (one pass per label), differentiable in x; ``predict`` is its argmax."""

    def __init__(self, learner: ModelFF):
        super().__init__()
        self.model = learner.model
        self._learner = [learner]  # not a submodule: the model is

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        learner = self._learner[0]
        scores = []
        for k in range(learner.n_classes):
            labels = torch.full((len(x),), k, dtype=torch.long, device=x.device)
            scores.append(torch.stack(learner.goodness(learner.embed(x, labels), False)).sum(0))
        return torch.stack(scores, 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        return torch.cat([self(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


MODEL_PEERS: dict[str, type[ModelPeer]] = {"fa": ModelFA, "dfa": ModelDFA, "drtp": ModelDRTP, "pepita": ModelPEPITA,
                                           "ff": ModelFF}
