"""Names the command line needs before any work: tasks, suites and panel methods.

Plain data, no imports, so that building the ``localstdp`` argument parser (and ``--help``,
``--version``) does not load torch, numpy or scikit-learn. ``localstdp.config`` re-exports
PANEL_METHODS; ``localstdp.evaluation.plan`` reads TASKS and SUITES.
"""

from __future__ import annotations

# Task registry: name -> config file shipped in localstdp/configs. A new task is one line here.
TASKS: dict[str, str] = {
    "iris-1v2": "iris.toml",
    "mnist-0v1": "mnist-0v1.toml",
    "mnist-3v5": "mnist-3v5.toml",
    "mnist-4v9": "mnist-4v9.toml",
    "mnist-10": "mnist-10.toml",  # ten classes (issue 7): the 5000-image subset
    "digits-10": "digits.toml",
    "fashion-mnist": "fashion-mnist.toml",  # the full 70000 images: needs dataset-fashion-mnist (or data.url)
    # the same ten classes on the pairs' 784-128-64 network: the protocol of issue 23 fits a 2-core session
    "fashion-mnist-small": "fashion-mnist-small.toml",
    "mnist-10-cnn": "mnist-10-cnn.toml",  # model.kind = "cnn" (issue 13): both methods on the same CNN
    "fashion-mnist-cnn": "fashion-mnist-cnn.toml",  # the CNN on the full 70000 images
    # Fashion-MNIST pairs a linear model does worst on (issue 23; docs/tune/fashion-pairs.md)
    "fashion-0v6": "fashion-0v6.toml",  # T-shirt/top vs Shirt
    "fashion-2v6": "fashion-2v6.toml",  # Pullover vs Shirt
}
# Named groups of tasks for ``localstdp reproduce --suite``.
SUITES: dict[str, tuple[str, ...]] = {
    "paper": ("iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9"),
    "extended": ("iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9", "mnist-10", "digits-10", "fashion-mnist"),
    # the peer local rules beside ours (issue 14; defaults: cli/reproduce.py SUITE_DEFAULTS)
    # where a linear model is not enough (issue 23): the two hardest pairs for it, and ten classes (on the
    # small network: the 2048-64 fashion-mnist costs about 8 core-hours under this protocol)
    "nonlinear": ("fashion-0v6", "fashion-2v6", "fashion-mnist-small"),
    "peers": ("iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9", "mnist-10", "fashion-mnist"),
    # the local rule in timing mode beside rate mode, paired on the same seeds and test examples (issue 32
    # item 4; defaults: cli/reproduce.py SUITE_DEFAULTS; docs/rule.md, "Timing mode on the paper tasks")
    "timing": ("iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9"),
    # the robustly trained families and input noise for every family beside the rule (issue 33; defaults:
    # cli/reproduce.py SUITE_DEFAULTS; docs/results.md)
    "robust": ("iris-1v2", "mnist-0v1", "mnist-3v5", "mnist-4v9"),
}

# The methods of the comparison panel (docs/evaluation.md): each trains the same model from the same
# seed; ``[methods.<name>]`` in a config holds that method's own settings (tables shaped like the
# config's sections, e.g. [methods.backprop-wd.backprop] weight_decay = 0.003), chosen by `localstdp tune`.
# ``reproduce`` without --methods runs DEFAULT_METHODS; the peer local rules (docs/peers.md) join with
# --methods NAME ... (each its own learner, settings in [methods.<name>.peers]).
DEFAULT_METHODS: tuple[str, ...] = ("local", "backprop", "backprop-wd", "backprop-es", "backprop-mse")
PEER_RULES: tuple[str, ...] = ("fa", "dfa", "drtp", "pepita", "ff")
# The simplest models that could explain a result (issue 23; rules/shallow.py), also only with --methods:
# logistic regression on the input pixels, and the task's network with frozen random hidden layers and
# a trained readout. Their L2 strength is [methods.<name>.backprop] weight_decay, chosen by `localstdp tune`.
SHALLOW_BASELINES: tuple[str, ...] = ("linear", "random-features")
# The local rule in timing mode (rule.mode = "timing": the STDP window's finite time constants, docs/rule.md),
# only with --methods or --suite timing; its settings are the local rule's plus [methods.local-timing].
TIMING_METHODS: tuple[str, ...] = ("local-timing",)
# Trained to be robust (issue 33; rules/robust.py): PGD adversarial training (Madry et al. 2018) and TRADES
# (Zhang et al. 2019) of the same network, and the local rule shown adversarial examples crafted against its own
# current model; only with --methods or --suite robust. Their training radius is [methods.<name>.robust] adv_eps.
ROBUST_METHODS: tuple[str, ...] = ("backprop-at", "backprop-trades", "local-at")
PANEL_METHODS: tuple[str, ...] = (*DEFAULT_METHODS, *PEER_RULES, *SHALLOW_BASELINES, *TIMING_METHODS, *ROBUST_METHODS)
# The learners ``localstdp train --rule`` accepts: the keys of localstdp.rules.LEARNERS, in order.
LEARNER_NAMES: tuple[str, ...] = ("local", "backprop", "backprop-mse", *PEER_RULES, *SHALLOW_BASELINES)

__all__ = ["DEFAULT_METHODS", "LEARNER_NAMES", "PANEL_METHODS", "PEER_RULES", "ROBUST_METHODS", "SHALLOW_BASELINES",
           "SUITES", "TASKS", "TIMING_METHODS"]
