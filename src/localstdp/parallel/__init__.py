"""Layer-pipeline and data-parallel training over torch.distributed (gloo on CPU).

The local rule needs, for layer l and batch k, only that layer's own input a^(l-1)_k and output
a^l_k (computed with W^l as updated by batch k-1) and the broadcast label y_k. Nothing flows back
from later layers, so two schedules are exact:

``pipeline``  rank r owns a contiguous slice of layers (the package MLP's, or the units of any
    nn.Sequential trained by LocalLearner, e.g. a CNN config; drtp and ff on the MLP too:
    stages.py, partition.py). Rank 0 reads batch k, runs its layers
    (forward, local update, apply), and sends (y_k, activity) to rank 1 while it goes on with
    batch k+1; rank r receives, runs its layers, sends on. There are no backward messages, so
    with several micro-batches in flight all ranks compute at once. Each rank performs exactly
    the tensor operations of the single-process loop (:func:`localstdp.train.train`) on its
    layers, in the same order, so with the same seed and threads per process the weights are
    equal bit for bit.
``data``  every rank takes a contiguous shard of every batch, computes its per-layer changes
    with ``reduction="sum"``; one all_reduce sums them and every rank applies the same change
    (equal to single-process up to float summation order); every learner, any model it accepts.
    The backprop baseline uses plain DistributedDataParallel instead, so the comparison stays
    fair; it has no pipeline mode (nor have fa, dfa and pepita: see stages.REFUSED).

Every rank loads the data set and builds the full model from the seed (identical everywhere);
at the end of an epoch the owners broadcast their layers, all ranks evaluate a shard of the
train/test sets, and rank 0 alone writes the run directory exactly as ``train`` does (so
``localstdp evaluate --run DIR`` works), logs and shows progress.

Processes join through the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``); :func:`launch` starts N local workers through torch's elastic launcher on
127.0.0.1 for users without torchrun. Every wait on a peer has a timeout, so a dead or hung
peer ends every process with :class:`~localstdp.errors.DistributedError` instead of a hang.
"""

from ..model import build_model
from .bench import benchmark
from .comm import (
    DEFAULT_TIMEOUT,
    MODES,
    SEND_WINDOW,
    check_config,
    check_mode,
    exit_if_group_left,
    layer_costs,
    partition_layers,
    under_torchrun,
)
from .launcher import launch, run, train_from_cli, train_parallel
from .partition import sequential_units
from .setup import build_learner
from .stages import PIPELINE_RULES, REFUSED, make_plan

__all__ = [
    "DEFAULT_TIMEOUT",
    "MODES",
    "PIPELINE_RULES",
    "REFUSED",
    "SEND_WINDOW",
    "benchmark",
    "build_learner",
    "build_model",
    "check_config",
    "check_mode",
    "exit_if_group_left",
    "launch",
    "layer_costs",
    "make_plan",
    "partition_layers",
    "run",
    "sequential_units",
    "train_from_cli",
    "train_parallel",
    "under_torchrun",
]
