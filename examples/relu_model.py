"""A ReLU network trained by the local rule: activity="map".

The rule's targets are firing rates in (0, 1), so it reads each hidden layer's rate as its ReLU output
clamped to [0, 1]; the network itself is unchanged (the next layer receives the ReLU output as is).
Without the option LocalLearner refuses the model with a one-line reason (printed first below).
Settings: the digits ones of docs/activations.md (pairs codes, targets 0.99 / 0.01, lr 1).

    .venv/bin/python examples/relu_model.py                # scikit-learn's 8x8 digits, 30 epochs
    .venv/bin/python examples/relu_model.py --limit 600 --epochs 5
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localstdp import LocalLearner
from localstdp.errors import ConfigError

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
args = parser.parse_args()
torch.manual_seed(0)

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32)[: args.limit] / 16.0  # (N, 64) in [0, 1]
y = torch.tensor(digits.target)[: args.limit]
n_test = len(y) // 4
train = DataLoader(TensorDataset(x[n_test:], y[n_test:]), batch_size=32, shuffle=True)

model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
try:
    LocalLearner(model, n_classes=10).resolve(x[:1])
except ConfigError as refused:
    print(f"without activity=: {refused}")

learner = LocalLearner(model, n_classes=10, lr=1.0, activity="map", association="pairs", a_hi=0.99, a_lo=0.01)
for epoch in range(args.epochs):
    loss = sum(learner.step(xb, yb) for xb, yb in train) / len(train)
    with torch.no_grad():
        acc = float((model(x[:n_test]).argmax(1) == y[:n_test]).float().mean())
    print(f"epoch {epoch + 1}: target error {loss:.4f}, test accuracy {acc:.3f}")
print(f"final test accuracy {acc:.3f}")
