"""``python -m runner.train``: the same seed, torch and threads give the same tensors."""

import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from runner import REPO_ROOT
from runner.errors import RunnerError
from runner.model import load_model
from runner.train import train


def compose_train(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        return compose(config_name="train", overrides=list(overrides))


def test_same_seed_same_tensors_and_a_model_that_learned():
    torch.set_num_threads(1)
    cfg = compose_train("epochs=1", "limit=3000", "batch_size=100")
    first, accuracy = train(cfg)
    second, again = train(cfg)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert accuracy == again and accuracy >= 0.5  # 30 steps on 3,000 images; chance is 0.1
    other, _ = train(compose_train("epochs=1", "limit=3000", "batch_size=100", "seed=1"))
    assert not torch.equal(
        first.state_dict()["network.0.weight"], other.state_dict()["network.0.weight"]
    )


@pytest.mark.parametrize("override", ["epochs=0", "batch_size=0", "lr=0"])
def test_nonsense_settings_are_refused(override):
    with pytest.raises(RunnerError, match="must be positive"):
        train(compose_train(override, "limit=10"))


def test_the_command_writes_weights_the_runner_loads(tmp_path):
    out = tmp_path / "w.pt"
    done = subprocess.run(
        [sys.executable, "-m", "runner.train", "epochs=1", "limit=500", f"out={out}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Test accuracy:" in done.stdout
    note = json.loads(out.with_suffix(".json").read_text())
    assert note["limit"] == 500 and note["epochs"] == 1 and note["torch"] == torch.__version__
    load_model(out)  # a state dict of the right shapes
