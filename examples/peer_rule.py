"""A peer rule on your own nn.Module: direct feedback alignment (DFA) instead of backprop.

Each hidden layer learns from the output error sent straight to it through a fixed random matrix;
torch.optim (Adam) applies the update. Any of rule="fa" | "dfa" | "drtp" | "pepita" | "ff" takes the
same model (nn.Linear layers, each followed by nn.Sigmoid but the last; docs/peers.md).

    .venv/bin/python examples/peer_rule.py                 # scikit-learn's 8x8 digits, 20 epochs
    .venv/bin/python examples/peer_rule.py --limit 600 --epochs 5 --rule fa
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localstdp import LocalLearner

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
parser.add_argument("--rule", default="dfa", choices=["fa", "dfa", "drtp", "pepita"])
args = parser.parse_args()
torch.manual_seed(0)

digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32)[: args.limit] / 16.0  # (N, 64) in [0, 1]
y = torch.tensor(digits.target)[: args.limit]
n_test = len(y) // 4
train = DataLoader(TensorDataset(x[n_test:], y[n_test:]), batch_size=32, shuffle=True)


class Net(nn.Module):  # your own module: the head may be defined first, the call order is what counts
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(64, 10)
        self.body = nn.Sequential(nn.Linear(64, 128), nn.Sigmoid(), nn.Linear(128, 64), nn.Sigmoid())

    def forward(self, x):
        return self.head(self.body(x))


model = Net()
learner = LocalLearner(model, n_classes=10, lr=1e-2, rule=args.rule)
for epoch in range(args.epochs):
    loss = sum(learner.step(xb, yb) for xb, yb in train) / len(train)
    with torch.no_grad():
        acc = float((model(x[:n_test]).argmax(1) == y[:n_test]).float().mean())
    print(f"epoch {epoch + 1}: loss {loss:.4f}, test accuracy {acc:.3f}")
print(f"final test accuracy {acc:.3f}")
