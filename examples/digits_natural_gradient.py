"""Classify the 8×8 digits with natural-gradient descent: exact Fisher (GGN + CG) and K-FAC.

Each step solves ``(F + λI) x = ∇L`` for the Fisher ``F`` of the model's
categorical output on the minibatch and moves ``θ ← θ − α x``:

* ``NaturalGradient(fisher="ggn")``: ``x`` by 10 conjugate-gradient
  iterations on the exact Fisher ``Jᵀ F_out J`` (a few Jacobian products per
  iteration), fixed learning rate;
* ``NaturalGradient(fisher="kfac", model=...)``: ``x`` by K-FAC's Kronecker-
  factored inverses, with ACKTR's KL clipping ``α = min(lr, sqrt(2δ / xᵀF̂x))``.

Adam runs alongside for reference.  Runs in a few seconds on a CPU::

    python examples/digits_natural_gradient.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from natgrad.optim import NaturalGradient


def load(seed: int = 0):
    """Standardised digits, 80/20 stratified split."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
    tx = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return tx(x_tr), torch.tensor(y_tr), tx(x_te), torch.tensor(y_te)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    )


def train(name: str, epochs: int, data, batch: int = 128) -> list[float]:
    x_tr, y_tr, x_te, y_te = data
    model = make_model()
    if name == "ggn":
        opt = NaturalGradient(model.parameters(), lr=0.3, damping=1e-2, likelihood="categorical")
    elif name == "kfac":
        opt = NaturalGradient(
            model.parameters(),
            max_kl=1e-3,
            max_lr=0.1,
            damping=1e-2,
            fisher="kfac",
            model=model,
            likelihood="categorical",
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.03)
    gen = torch.Generator().manual_seed(0)
    accs = []
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=gen)
        for start in range(0, len(x_tr), batch):
            xb, yb = x_tr[perm[start : start + batch]], y_tr[perm[start : start + batch]]
            if isinstance(opt, NaturalGradient):

                def closure(xb=xb, yb=yb):
                    logits = model(xb)  # the closure returns (loss, output); no backward()
                    return F.cross_entropy(logits, yb), logits

                opt.step(closure)
            else:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
        with torch.no_grad():
            accs.append(float((model(x_te).argmax(-1) == y_te).float().mean()))
    return accs


def main(epochs: int = 4) -> dict[str, list[float]]:
    # Tiny models run fastest on one thread; several threads can be far slower on a busy CPU.
    torch.set_num_threads(1)
    data = load()
    results = {}
    for name in ("ggn", "kfac", "adam"):
        start = time.perf_counter()
        accs = train(name, epochs, data)
        results[name] = accs
        curve = " ".join(f"{a:.3f}" for a in accs)
        print(f"{name:5s} test accuracy by epoch: {curve}  ({time.perf_counter() - start:.1f} s)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    main(parser.parse_args().epochs)
