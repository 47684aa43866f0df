"""What every learner on a user's nn.Module shares, whatever its rule: the walker (which layers, in
which order: :mod:`localstdp.walker`), devices, checkpointable state and what ``step`` returns.

* Order. The layers are found without a forward pass (definition order), then put in CALL order by
  the first forward pass, the first ``step``/``updates`` or ``resolve(example)``; a later pass that
  calls them in another order is refused. State built per layer (association codes, fixed random
  matrices) is built for the call order.
* Devices. ``learner.to(device)`` moves the model and the learner's tensors; after a plain
  ``model.to(...)`` the learner's tensors follow at the next step (each to its layer's device).
* State. ``state_dict()`` is a flat dict of name -> tensor (safetensors can save it; integers are
  0-d int64 tensors): ``walker.order`` (the call order as indices into definition order), ``steps``,
  ``lr`` and the rule's own tensors. ``load_state_dict`` restores them on a learner built the same way
  on a model holding the saved weights (the model's weights are the model's ``state_dict``).
* ``step(x, y)`` returns a :class:`StepResult`: a float (the rule's loss on the batch, before the
  update; what ``step`` always returned) carrying ``.loss`` and ``.logits`` (the model's output for
  ``x``, computed by the step's own forward pass: no second pass for metrics).
* Arguments (:mod:`localstdp.checks`). ``step`` and ``updates`` take ``x``: a non-empty batch of finite
  values of the model's dtype on its first layer's device, and ``y``: (batch,) integer labels in
  [0, n_classes) (any integer dtype; used as int64); anything else raises
  :class:`~localstdp.errors.ArgumentError` / :class:`~localstdp.errors.ArgumentTypeError` naming the
  argument, before any layer changes. An input the model's forward pass itself refuses (a wrong
  number of features) raises ArgumentError naming ``x``, with torch's message.
* Learning rate. ``learner.optimizer`` is a torch.optim.Optimizer whose ``param_groups[0]["lr"]`` is
  the rule's learning rate, read at every step: any ``torch.optim.lr_scheduler`` drives it
  (``LambdaLR(learner.optimizer, fn)`` for a callable ``fn(step) -> factor``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import checks
from .errors import ArgumentError, ConfigError
from .rules.layerwise import units
from .walker import describe, learnable_layers, record


class StepResult(float):
    """``step``'s return value: the loss as a float (backward compatible), with ``.loss`` and ``.logits``."""

    logits: torch.Tensor | None

    def __new__(cls, loss: float, logits: torch.Tensor | None = None):
        obj = super().__new__(cls, loss)
        obj.logits = logits
        return obj

    @property
    def loss(self) -> float:
        return float(self)


class LearningRate(torch.optim.Optimizer):
    """Holds a hand-written rule's learning rate as ``param_groups[0]["lr"]`` so that torch's LR
    schedulers can drive it; ``step()`` changes nothing (the learner applies its own updates)."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    def step(self, closure=None):  # noqa: D102 - the learner's step applies the update
        return None


class ModelLearner:
    """Base of the learners on a user's model (see the module docstring). Subclasses set ``rule``,
    implement ``_rebuild()`` (per-layer state for the call order), ``_follow()`` (tensors to the
    layers' devices), ``_rule_state()`` / ``_load_rule_state()``."""

    rule = "?"
    _rate = None  # walker.record's rate map (LocalLearner's activity=, localstdp.activity); None: nn.Sigmoid only
    _hint = ""  # appended to the walker's refusal of a layer not followed by nn.Sigmoid

    def _check_args(self, model: nn.Module, n_classes: int, lr: float, seed: int) -> None:
        """The constructor's arguments (every rule)."""
        checks.instance("model", model, nn.Module, "a torch.nn.Module")
        checks.integer("n_classes", n_classes, lo=2)
        checks.number("lr", lr, lo=0, lo_open=True)
        checks.seed("seed", seed)

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A training batch (see the module docstring); returns ``y`` as int64 on ``x``'s device."""
        dtype, device = self._input_kind()
        return checks.batch(x, y, self.n_classes, dtype, device)

    def _input_kind(self) -> tuple[torch.dtype, torch.device | None]:
        """The dtype and device of the first layer (in call order once resolved); the device is not checked
        before the first pass when the layers lie on several devices (the first one called is not known)."""
        w = self.layers[0].weight
        if not self.resolved and any(m.weight.device != w.device for m in self.layers):
            return w.dtype, None
        return w.dtype, w.device

    def _walk(self, model: nn.Module, n_classes: int, conv: bool = True) -> None:
        named = learnable_layers(model)
        if not conv:
            bad = next(((n, m) for n, m in named if isinstance(m, nn.Conv2d)), None)
            if bad is not None:
                raise ConfigError(f"{describe(*bad)}: rule {self.rule!r} trains nn.Linear layers only (docs/peers.md); "
                                  "conv layers train with rule 'local' or backprop")
        if not any(isinstance(m, nn.Linear) and units(m) == n_classes for _, m in named):
            raise ConfigError(f"{type(model).__name__} has no learnable nn.Linear with n_classes = {n_classes} outputs "
                              "(the output layer)")
        self.model = model
        self.n_classes = n_classes
        self._defined = [n for n, _ in named]
        # provisional order until the first pass: definition order, the last n_classes-wide Linear last
        out = max(k for k, (_, m) in enumerate(named) if isinstance(m, nn.Linear) and units(m) == n_classes)
        named = named[:out] + named[out + 1 :] + [named[out]]
        self.layers = [m for _, m in named]  # call order once resolved (permuted in place)
        self.names = [n for n, _ in named]
        self._leaves = [m for m in model.modules() if next(m.children(), None) is None]
        self.resolved = False
        self.steps = 0

    # -- order ----------------------------------------------------------------------------------
    @torch.no_grad()
    def resolve(self, example: torch.Tensor) -> None:
        """Put the layers in call order with one probe forward pass of ``example`` (buffers such as
        running statistics and the random generators are left as they were)."""
        if self.resolved:
            return
        checks.model_input("example", example, *self._input_kind())
        saved = [(b, b.clone()) for b in self.model.buffers()]
        devices = [example.device] if example.device.type != "cpu" else []
        try:
            with torch.random.fork_rng(devices=devices):
                self.record(example)
        finally:
            for b, v in saved:
                b.copy_(v)

    def record(self, x: torch.Tensor, part: nn.Module | None = None, leaves=None):
        """walker.record on this learner's model; the first full pass fixes the call order."""
        try:
            out, found, order = record(self.model, x, self.layers, self.names, leaves or self._leaves, part,
                                       self.resolved, self._rate, self._hint)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:  # the model refused the input itself (a wrong number of features)
            if part is not None:
                raise
            raise self._forward_error(x, exc) from exc
        if part is None:
            missing = [self.names[l] for l in range(len(self.layers)) if found[l] is None]
            if missing:
                raise ConfigError(f"learnable layer(s) {', '.join(missing)} not called in the forward pass; freeze "
                                  "them with requires_grad_(False) or remove them")
            if not self.resolved:
                self._adopt(order)
                found = [found[l] for l in order]
            elif order != list(range(len(order))):
                raise ConfigError("the forward pass called the learnable layers in another order than the first pass "
                                  f"({', '.join(self.names[l] for l in order)}); a learner needs one fixed order")
        elif not self.resolved:
            raise ConfigError("call learner.resolve(example) with a full model input before running a part of it")
        return out, found

    def _forward_error(self, x: torch.Tensor, exc: Exception) -> ArgumentError:
        first = next((m for m in self.model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), self.layers[0])
        takes = (f"{first.in_channels} input channels" if isinstance(first, nn.Conv2d)
                 else f"{first.in_features} input features")
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ArgumentError(f"x: expected an input the model's forward pass accepts (its first layer, a "
                             f"{type(first).__name__}, takes {takes}), got {checks.got(x)}; the forward pass "
                             f"failed with: {msg}")

    def _adopt(self, order: list[int]) -> None:
        """The layers in call ``order`` (permuting every per-layer list in place), then the output check."""
        for seq in self._per_layer():
            seq[:] = [seq[l] for l in order]
        self.resolved = True
        last, name = self.layers[-1], self.names[-1]
        if not isinstance(last, nn.Linear) or units(last) != self.n_classes:
            raise ConfigError(f"{describe(name, last)} is the output layer (the last learnable one the forward pass "
                              f"calls): it must be an nn.Linear with n_classes = {self.n_classes} outputs")
        self._rebuild()

    def _per_layer(self) -> list[list]:
        return [self.layers, self.names]

    def _rebuild(self) -> None:
        """Per-layer state for the call order (subclasses)."""

    def _follow(self) -> None:
        """Move the learner's tensors to their layers' devices (subclasses)."""

    def to(self, *args, **kwargs):
        """``model.to(*args, **kwargs)`` and the learner's tensors with it; returns the learner."""
        self.model.to(*args, **kwargs)
        self._follow()
        return self

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor (see the module docstring); needs the call order (one step or resolve)."""
        if not self.resolved:
            raise ConfigError("state_dict(): the layer order is known after the first forward pass; call "
                              "learner.resolve(example) or take one step first")
        order = [self._defined.index(n) for n in self.names]
        return {"walker.order": torch.tensor(order, dtype=torch.int64), "steps": torch.tensor(self.steps),
                "lr": torch.tensor(self.optimizer.param_groups[0]["lr"], dtype=torch.float64)} | self._rule_state()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state_dict()``'s state (see the module docstring). A state that does not fit this
        learner (a missing key, another number of layers, a tensor of another shape, NaN) raises
        :class:`~localstdp.errors.ArgumentError` naming the entry, and changes nothing."""
        order, steps, lr = self._check_state(state)
        if not self.resolved:
            self._adopt([self.names.index(self._defined[i]) for i in order])  # provisional -> saved order
        self._load_rule_state(state)
        self.steps = steps
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._follow()

    def _check_state(self, state) -> tuple[list[int], int, float]:
        """``state``'s call order, step count and learning rate, checked; then the rule's own entries."""
        checks.mapping("state", state, "a dict of name -> tensor (learner.state_dict())")
        n = len(self.layers)
        for key in ("walker.order", "steps", "lr"):
            if key not in state:
                checks.fail("state", f"an entry {key!r} (learner.state_dict())", f"keys {sorted(state)[:8]}")
            checks.tensor(f"state[{key!r}]", state[key])
        order = state["walker.order"]
        if order.dtype not in checks.INTEGER_DTYPES or order.shape != (n,) or sorted(order.tolist()) != list(range(n)):
            checks.fail("state['walker.order']", f"a permutation of 0..{n - 1} (this model's {n} learnable layers)",
                        f"{order.tolist() if order.numel() <= 16 else checks.got(order)}")
        steps, lr = state["steps"], state["lr"]
        if steps.numel() != 1 or steps.dtype not in checks.INTEGER_DTYPES or int(steps) < 0:
            checks.fail("state['steps']", "one integer >= 0", checks.got(steps))
        if lr.numel() != 1 or not lr.dtype.is_floating_point or not math.isfinite(float(lr)) or float(lr) <= 0:
            checks.fail("state['lr']", "one finite learning rate > 0", checks.got(lr))
        order = [int(i) for i in order]
        if self.resolved and [self._defined.index(n) for n in self.names] != order:
            raise ConfigError("load_state_dict: the saved call order differs from this model's")
        by_name = dict(zip(self.names, self.layers))
        self._check_rule_state(state, [by_name[self._defined[i]] for i in order])
        return order, int(steps), float(lr)

    def _check_rule_state(self, state, layers: list[nn.Module]) -> None:
        """The rule's own entries of a state, for ``layers`` in the saved call order (subclasses); raise
        ArgumentError before anything changes."""

    def _rule_state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_rule_state(self, state: dict[str, torch.Tensor]) -> None:
        pass
