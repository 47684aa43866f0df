"""Peer local rules behind the learner interface, for comparison with the association rule
(docs/peers.md): one learner per file, each as its paper defines it.

  fa      feedback alignment (Lillicrap et al. 2016)              needs a feedback pathway
  dfa     direct feedback alignment (Nøkland 2016)                needs a feedback pathway
  drtp    direct random target projection (Frenkel et al. 2021)   forward-only
  pepita  PEPITA (Dellaferrera & Kreiman 2022)                    forward-only
  ff      Forward-Forward (Hinton 2022)                           forward-only; predicts with FFScorer

Settings: :class:`PeerParams` (``[peers]``; one rule's own values in ``[methods.<rule>.peers]``).
"""

from __future__ import annotations

from .base import PeerLearner
from .dfa import DirectFeedbackAlignment
from .drtp import DirectRandomTargetProjection
from .fa import FeedbackAlignment
from .ff import FFScorer, ForwardForward
from .params import PeerParams
from .pepita import PEPITA

PEERS: dict[str, type[PeerLearner]] = {
    "fa": FeedbackAlignment,
    "dfa": DirectFeedbackAlignment,
    "drtp": DirectRandomTargetProjection,
    "pepita": PEPITA,
    "ff": ForwardForward,
}
# Methods whose prediction is not argmax model(x): name -> the module that predicts (and is attacked)
SCORERS = {"ff": FFScorer}

__all__ = ["PEERS", "PEPITA", "SCORERS", "DirectFeedbackAlignment", "DirectRandomTargetProjection", "FFScorer",
           "FeedbackAlignment", "ForwardForward", "PeerLearner", "PeerParams"]
