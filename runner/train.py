"""``python -m runner.train``: train the CNN from scratch on the training split.

Reproducible for a given seed, torch version and thread count. Reports accuracy on the
held-out test split and writes the state dict (and a JSON note of how it was made).
"""

import json
import sys
import time
from dataclasses import dataclass
from typing import Optional

import hydra
import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig
from torch import nn

from runner import REPO_ROOT
from runner.config import register, repo_path
from runner.data import load_split
from runner.errors import RunnerError
from runner.execution.backends import Spec, build
from runner.execution.classify import classify_range
from runner.files import atomic
from runner.model import MnistCNN, to_input


@dataclass
class TrainConfig:
    epochs: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    limit: Optional[int] = MISSING
    data_dir: str = MISSING
    out: str = MISSING


register()
ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def train(cfg: DictConfig) -> tuple[MnistCNN, float]:
    """Adam, learning rate decayed along a cosine; returns the model and its test accuracy."""
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise RunnerError("epochs, batch_size and lr must be positive")
    torch.manual_seed(cfg.seed)
    data_dir = repo_path(cfg.data_dir)
    train_split = load_split(data_dir, "train")
    images, labels = train_split.images, torch.from_numpy(train_split.labels.astype(np.int64))
    if cfg.limit is not None:
        images, labels = images[: cfg.limit], labels[: cfg.limit]
    model = MnistCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * -(-len(labels) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        started, total = time.perf_counter(), 0.0
        permutation = torch.randperm(len(labels), generator=order).numpy()
        for first in range(0, len(labels), cfg.batch_size):
            batch = permutation[first : first + cfg.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(to_input(images[batch])), labels[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {total / len(labels):.4f} "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    model.eval()
    test = load_split(data_dir, "test")
    pred, _, _ = classify_range(build("eager", Spec(model)), test.images, 0, len(test), 0, 1000)
    return model, float(np.mean(pred == test.labels))


@hydra.main(version_base="1.3", config_path=str(REPO_ROOT / "conf"), config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        model, accuracy = train(cfg)
    except RunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    out = repo_path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic(out) as tmp:
        torch.save(model.state_dict(), tmp)
    note = {
        "test_accuracy": accuracy,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "limit": cfg.limit,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    out.with_suffix(".json").write_text(json.dumps(note, indent=2) + "\n")
    print(f"Test accuracy: {accuracy * 100:.2f}%  weights: {out}", flush=True)


if __name__ == "__main__":
    main()
