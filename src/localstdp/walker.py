"""Which layers of a user's nn.Module a learner trains, in which order, and what they saw.

Two halves, shared by every rule a :class:`localstdp.LocalLearner` runs (local, fa, dfa, drtp,
pepita, ff):

* :func:`learnable_layers` reads the module tree once (no forward pass) and refuses, with a
  :class:`ConfigError` naming the module, what no rule here can train correctly: trainable parameters
  outside nn.Linear / nn.Conv2d, one Parameter held by two modules (tied weights: the rule would add
  both layers' changes to it), parametrized weights (``torch.nn.utils.parametrize``) and the legacy
  hook-based ``nn.utils.weight_norm`` / ``spectral_norm`` (the weight is recomputed at every forward,
  so a change written to it is lost), and modules that work in place. A Linear/Conv2d is learnable
  when ANY of its parameters requires grad; a learner changes only those that do.
* :func:`record` runs one forward pass with hooks on every leaf module and returns, per learnable
  layer, its input ``pre`` and its activity ``post`` (the nn.Sigmoid module called right after it;
  the last layer's own output through a sigmoid when none follows; with a ``rate`` map, the rate it
  reads from any element-wise activation: :mod:`localstdp.activity`), plus the CALL order of the
  layers: the order a learner trains them in is the order the forward pass calls them, not the
  order ``named_modules()`` lists them. It refuses a layer called twice, a layer not followed by
  nn.Sigmoid (but the last), and anything that is not a chain: between one learnable layer and the
  next every leaf module must receive exactly the output of the module called before it (the same
  storage, or a view of it, unmodified). A residual ``h + x``, a concatenation or a functional op in
  ``forward`` makes a new tensor there and is refused with the module that receives it named, as is
  an in-place change (``h += x``: caught by the tensor's version counter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .activity import ELEMENTWISE
from .errors import ConfigError
from .rules.layerwise import conv_padding

ACTIVATIONS = (nn.Sigmoid,)
LEARNABLE = (nn.Linear, nn.Conv2d)


def describe(name: str, module: nn.Module) -> str:
    return f"{name or 'the model'} ({type(module).__name__})"


def _check_conv(name: str, conv: nn.Conv2d) -> None:
    """Refuse what the unfold-based conv update does not cover."""
    if conv.groups != 1:
        raise ConfigError(f"{describe(name, conv)}: groups = {conv.groups}; the local rule supports groups = 1")
    if conv.padding_mode != "zeros":
        raise ConfigError(f"{describe(name, conv)}: padding_mode {conv.padding_mode!r}; the local rule reads "
                          "padding as zero activity (padding_mode='zeros')")
    try:
        conv_padding(conv)
    except ValueError as exc:
        raise ConfigError(f"{describe(name, conv)}: {exc}") from None


def _check_weight_is_a_parameter(name: str, m: nn.Module) -> None:
    """Parametrizations and the legacy weight_norm / spectral_norm hooks recompute ``weight`` from other
    tensors at every forward pass: a change the rule writes to it would be lost (or refused by torch)."""
    trainable = any(p.requires_grad for p in m.parameters())
    if not trainable:
        return
    if parametrize.is_parametrized(m):
        which = ", ".join(m.parametrizations.keys())
        raise ConfigError(f"{describe(name, m)}: its {which} is parametrized (torch.nn.utils.parametrize, e.g. "
                          "parametrizations.weight_norm): learners write the weight itself; remove the "
                          "parametrization (parametrize.remove_parametrizations) or freeze the module")
    if isinstance(m, LEARNABLE) and "weight" not in m._parameters:
        hooks = [type(h).__name__ for h in m._forward_pre_hooks.values()]
        legacy = next((h for h in hooks if h in ("WeightNorm", "SpectralNorm")), None)
        how = (f"the hook-based nn.utils.{'weight_norm' if legacy == 'WeightNorm' else 'spectral_norm'} recomputes "
               "its weight at every forward pass, so a change written to it is lost; remove it "
               f"(nn.utils.remove_{'weight_norm' if legacy == 'WeightNorm' else 'spectral_norm'})"
               if legacy else "its weight is not a Parameter of the module")
        raise ConfigError(f"{describe(name, m)}: {how}")


def _check_shared(model: nn.Module) -> None:
    """One trainable Parameter held by two modules (tied weights): refused, both modules named."""
    owners: dict[int, dict[int, str]] = {}  # parameter -> {module: its name}; one module under two names
    for name, m in model.named_modules():  # is one module (a second call is refused by record)
        for pname, p in m._parameters.items():
            if p is not None and p.requires_grad:
                owners.setdefault(id(p), {})[id(m)] = f"{name}.{pname}" if name else pname
    for names in owners.values():
        if len(names) > 1:
            where = sorted(names.values())
            modules = " and ".join(n.rpartition(".")[0] or "the model" for n in where)
            raise ConfigError(f"{modules} share one Parameter ({', '.join(where)}): a learner would add every "
                              "sharer's change to it; give each module its own Parameter or freeze it")


def learnable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module), in ``named_modules()`` order, of every nn.Linear / nn.Conv2d with a parameter that
    requires grad; ConfigError, naming the module, for anything no learner here trains correctly."""
    found = []
    for name, m in model.named_modules():
        if getattr(m, "inplace", False) is True:
            raise ConfigError(f"{describe(name, m)} works in place and would overwrite the activity the local "
                              "rule reads; use inplace=False")
        _check_weight_is_a_parameter(name, m)
        trainable = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if isinstance(m, LEARNABLE) and trainable:
            if isinstance(m.weight, nn.parameter.UninitializedParameter):
                raise ConfigError(f"{describe(name, m)}: run one forward pass to initialise lazy layers first")
            if isinstance(m, nn.Conv2d):
                _check_conv(name, m)
            found.append((name, m))
        elif trainable and not isinstance(m, parametrize.ParametrizationList):
            norm = isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
            hint = "use it without affine parameters, " if norm else ""
            hint += "freeze it with requires_grad_(False) or remove it"
            raise ConfigError(f"{describe(name, m)} has trainable parameters the local rule cannot train "
                              f"(it trains nn.Linear and nn.Conv2d only); {hint}")
    _check_shared(model)
    if not found:
        raise ConfigError(f"{type(model).__name__} has no learnable nn.Linear or nn.Conv2d layer")
    return found


def _version(t) -> int:
    try:
        return t._version
    except (AttributeError, RuntimeError):  # not a tensor, or an inference tensor (no version counter)
        return -1


@dataclass
class Call:
    """One leaf module's call: what it received (``given``: before any forward pre-hook of a learner,
    ``used``: what its forward saw) and what it returned, with the version counters at that time."""

    module: nn.Module
    given: torch.Tensor | None
    given_version: int
    used: torch.Tensor | None = None
    out: torch.Tensor | None = None
    out_version: int = -1


def _same(t, version: int, prev: Call) -> bool:
    """``t`` is ``prev``'s output (or a view of it) and nothing changed it in place since."""
    o = prev.out
    if not (isinstance(t, torch.Tensor) and isinstance(o, torch.Tensor)):
        return False
    if t is not o and (t.data_ptr() != o.data_ptr() or t.numel() != o.numel()):
        return False
    return version == prev.out_version


def record(model: nn.Module, x: torch.Tensor, layers: list[nn.Module], names: list[str], leaves: list[nn.Module],
           part: nn.Module | None = None, ordered: bool = False, rate=None, hint: str = ""):
    """One forward pass of ``model`` (or of ``part`` of it, fed ``x``) with hooks on ``leaves``.

    Returns (output, found, order): ``found[l]`` is layer l's (pre, post) or None when the pass did not
    call it; ``order`` lists the called layers' indices in call order. ``ordered``: the layers are
    already in call order (a learner after its first pass), so the last of them is the output layer;
    otherwise the last one called is. ``rate``: a map (activation module, z, its output) -> activity
    (:mod:`localstdp.activity`) under which a layer may also be followed by any element-wise activation
    of ``activity.ELEMENTWISE``; ``hint`` ends the refusal of any other. Runs under the caller's grad mode."""
    calls: list[Call] = []
    pending: dict[int, Call] = {}

    def before(module, inputs):
        t = inputs[0] if inputs else None
        pending[id(module)] = c = Call(module, t, _version(t))
        calls.append(c)

    def after(module, inputs, output):
        c = pending.pop(id(module), None) or Call(module, None, -1)
        c.used, c.out, c.out_version = (inputs[0] if inputs else None), output, _version(output)

    handles = [m.register_forward_pre_hook(before, prepend=True) for m in leaves]
    handles += [m.register_forward_hook(after) for m in leaves]
    try:
        out = model(x) if part is None else part(x)
    finally:
        for h in handles:
            h.remove()
    index = {id(m): l for l, m in enumerate(layers)}
    at = [(k, index[id(c.module)]) for k, c in enumerate(calls) if id(c.module) in index]
    seen: set[int] = set()
    for _, l in at:
        if l in seen:
            raise ConfigError(f"{describe(names[l], layers[l])} is called twice in one forward pass; a learner "
                              "needs one (pre, post) pair per layer (no shared weights)")
        seen.add(l)
    order = [l for _, l in at]
    last = len(layers) - 1 if ordered or part is not None else (order[-1] if order else -1)
    found: list = [None] * len(layers)
    for i, (k, l) in enumerate(at):
        c, where = calls[k], describe(names[l], layers[l])
        if i > 0:  # a chain of leaf modules from the previous learnable layer to this one
            for j in range(at[i - 1][0] + 1, k + 1):
                if not _same(calls[j].given, calls[j].given_version, calls[j - 1]):
                    raise ConfigError(
                        f"{describe(_name(calls[j].module, model), calls[j].module)} does not receive the output of "
                        f"{type(calls[j - 1].module).__name__}, the module called before it: a residual/skip "
                        "connection, a concatenation, an in-place change or a functional op in forward; the learners "
                        "need a chain of modules from one learnable layer to the next")
        nxt = calls[k + 1] if k + 1 < len(calls) else None
        follows = nxt is not None and _same(nxt.given, nxt.given_version, c)
        if follows and isinstance(nxt.module, ACTIVATIONS):
            post = nxt.out
        elif follows and rate is not None and isinstance(nxt.module, ELEMENTWISE):
            post = rate(nxt.module, c.out, nxt.out)  # the rule's rate; the network passes nxt.out on
        elif l == last:
            post = torch.sigmoid(c.out)  # the output layer: its logits' sigmoid, as in the package MLP
        else:
            after_ = "nothing" if nxt is None else type(nxt.module).__name__
            raise ConfigError(f"{where} is followed by {after_}, not nn.Sigmoid: the local rule reads a layer's "
                              "activity from the nn.Sigmoid module applied to its output (put pooling, "
                              f"dropout and flatten after the activation){hint}")
        if isinstance(layers[l], nn.Linear) and c.used.ndim != 2:
            raise ConfigError(f"{where} receives a {c.used.ndim}-D input; the local rule needs (batch, features): "
                              "add nn.Flatten before it")
        found[l] = (c.used, post)
    if part is None and at and isinstance(out, torch.Tensor):  # the output: the chain's end, no skip into it
        k = at[-1][0]
        for j in range(k + 1, len(calls)):
            if not _same(calls[j].given, calls[j].given_version, calls[j - 1]):
                raise ConfigError(f"{describe(_name(calls[j].module, model), calls[j].module)} does not receive the "
                                  f"output of {type(calls[j - 1].module).__name__}, the module called before it (a "
                                  "residual/skip connection or a functional op in forward)")
        if not _same(out, _version(out), calls[-1]):
            raise ConfigError(f"{type(model).__name__}'s output is not the output of its last module "
                              f"({type(calls[-1].module).__name__}): a skip connection or a functional op after it")
    _check_unchanged(calls, found, model)
    return out, found, order


def _name(module: nn.Module, model: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is module), "?")


def _check_unchanged(calls: list[Call], found: list, model: nn.Module) -> None:
    """No recorded output was changed in place later in the pass (``h += x`` after a layer)."""
    for c in calls:
        if c.out_version >= 0 and _version(c.out) != c.out_version:
            raise ConfigError(f"the output of {describe(_name(c.module, model), c.module)} is changed in place later "
                              "in the forward pass (a residual h += x?); the learners read it as it was computed")
