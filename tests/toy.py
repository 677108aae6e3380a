"""A toy regression objective for trainer tests (also run under torchrun by test_train.py)."""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset


class ToyObjective(nn.Module):
    """Linear regression with dropout noise (so the RNG stream matters); raises at `crash_at`."""

    phases = ("model",)

    def __init__(self, crash_at: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.1), nn.Linear(16, 1))
        self.crash_at = crash_at

    @property
    def ema_target(self) -> nn.Module:
        return self.net

    def parameters_for(self, phase):
        return list(self.net.parameters())

    def forward(self, batch, phase, step):
        if step == self.crash_at:
            raise KeyboardInterrupt(f"simulated kill at step {step}")
        x, y = batch
        loss = ((self.net(x).squeeze(-1) - y) ** 2).mean()
        return loss, {"mse": float(loss.detach())}


def toy_dataset(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))


if __name__ == "__main__":  # torchrun entry: python -m tests.toy RUN_DIR
    from imagefolder.config import TrainConfig
    from imagefolder.train import train
    torch.manual_seed(0)
    tcfg = TrainConfig(steps=8, batch_size=8, lr=1e-2, warmup_steps=1, ckpt_every=4, log_every=2, ema_decay=0.9)
    result = train(ToyObjective(), toy_dataset(), tcfg, sys.argv[1], seed=0, device="cpu")
    print(f"rank done: steps={result.steps} loss={result.history[-1]['loss_model']:.4f}")
