"""Credentials in a tracking URI or a secret-looking key never reach the store."""

import json

import mlflow
import yaml

from runner.redact import redact, redact_yaml, redacted
from tests.conftest import run_app


def test_userinfo_and_secret_keys_are_hidden():
    assert redact("http://ann:s3cret@host:5000/x") == "http://***@host:5000/x"
    assert redact("postgresql://u:pw@db/mlflow and https://t@h") == (
        "postgresql://***@db/mlflow and https://***@h"
    )
    assert redact("http://host:5000") == "http://host:5000"  # nothing to hide
    assert redact("db.password=hunter2 threads=2") == "db.password=*** threads=2"
    assert redacted({"api_key": "abc", "nested": {"token": 1, "uri": "http://a:b@c"}}) == {
        "api_key": "***", "nested": {"token": "***", "uri": "http://***@c"},
    }  # fmt: skip


def test_hydra_files_are_redacted_whole():
    config = yaml.safe_load(redact_yaml("mlflow:\n  tracking_uri: http://u:p@h\nthreads: 2\n"))
    assert config == {"mlflow": {"tracking_uri": "http://***@h"}, "threads": 2}
    overrides = yaml.safe_load(redact_yaml("- mlflow.tracking_uri=http://u:p@h\n- threads=2\n"))
    assert overrides == ["mlflow.tracking_uri=http://***@h", "threads=2"]


def test_a_password_in_the_config_lands_nowhere(tmp_path):
    # MLFLOW_TRACKING_URI (set by run_app) wins over the config's URI, so the run is logged
    # to the test's store while the config holds a URI with a password
    done = run_app(tmp_path, "grid.rows=2", "grid.columns=2",
                   "mlflow.tracking_uri=http://ann:hunter2@127.0.0.1:1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary_text = (tmp_path / "run" / "summary.json").read_text()
    assert "hunter2" not in summary_text
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gridbench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["mlflow.tracking_uri"] == "http://***@127.0.0.1:1"
    logged = json.dumps([run.data.params, run.data.tags, run.info.run_name])
    assert "hunter2" not in logged
    artifacts = tmp_path / "mlartifacts"
    (summary,) = artifacts.glob("**/artifacts/summary.json")
    assert "hunter2" not in summary.read_text()
    for name in ("config.yaml", "overrides.yaml"):
        (config,) = artifacts.glob(f"**/artifacts/hydra/{name}")
        assert "hunter2" not in config.read_text() and "***@127.0.0.1:1" in config.read_text()
