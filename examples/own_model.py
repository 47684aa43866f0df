"""Train your own PyTorch model with the local rule: no loss.backward(), no optimiser.

Your nn.Sequential CNN, a DataLoader over your dataset, and LocalLearner, which updates every
nn.Linear / nn.Conv2d from its own input, its own activity (the nn.Sigmoid after it) and the label.

    .venv/bin/python examples/own_model.py                # scikit-learn's 8x8 digits, 30 epochs
    .venv/bin/python examples/own_model.py --limit 600 --epochs 5
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localstdp import LocalLearner

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
args = parser.parse_args()
torch.manual_seed(0)

# 1. Your data: any (image, label) dataset; here 1797 8x8 digits scaled to [0, 1].
digits = load_digits()
x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
y = torch.tensor(digits.target)
x, y = x[: args.limit], y[: args.limit]
n_test = len(y) // 4
train = DataLoader(TensorDataset(x[n_test:], y[n_test:]), batch_size=32, shuffle=True)
test = DataLoader(TensorDataset(x[:n_test], y[:n_test]), batch_size=256)

# 2. Your model: every learnable layer is followed by nn.Sigmoid (its activity), except the last.
model = nn.Sequential(
    nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.Sigmoid(), nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(16 * 4 * 4, 64), nn.Sigmoid(),
    nn.Linear(64, 10),
)

# 3. The local rule: one forward pass per batch, every layer updated in place.
learner = LocalLearner(model, n_classes=10, lr=1.0)


def accuracy() -> float:
    with torch.no_grad():
        return sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in test) / n_test


for epoch in range(args.epochs):
    loss = sum(learner.step(xb, yb) for xb, yb in train) / len(train)
    print(f"epoch {epoch + 1}: target error {loss:.4f}, test accuracy {accuracy():.3f}")
print(f"final test accuracy {accuracy():.3f}")
