"""Credentials in a tracking URI or a secret-looking key never reach the store."""

import json

import mlflow
import pytest
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


@pytest.mark.parametrize("password", ["p@ss", "pa/ss", "pa:ss", "pa#ss", "p%40ss", "pa ss",
                                      "a@b/c:d#e%40f g"])  # fmt: skip
def test_a_password_of_any_characters_is_hidden_whole(password):
    """Clients take the last ``@`` of the authority: all of the userinfo goes, and only it."""
    assert redact(f"http://ann:{password}@host:5000/x") == "http://***@host:5000/x"
    assert redact(f"mlflow.tracking_uri=http://ann:{password}@host threads=2") == (
        "mlflow.tracking_uri=http://***@host threads=2"
    )
    assert redact(f"a=1,mlflow.tracking_uri=https://ann:{password}@h,threads=2") == (
        "a=1,mlflow.tracking_uri=https://***@h,threads=2"  # Hydra's override_dirname
    )


def test_hydra_files_are_redacted_whole():
    config = yaml.safe_load(redact_yaml("mlflow:\n  tracking_uri: http://u:p@h\nthreads: 2\n"))
    assert config == {"mlflow": {"tracking_uri": "http://***@h"}, "threads": 2}
    overrides = yaml.safe_load(redact_yaml("- mlflow.tracking_uri=http://u:p@h\n- threads=2\n"))
    assert overrides == ["mlflow.tracking_uri=http://***@h", "threads=2"]


@pytest.mark.usefixtures("made_store")
def test_a_password_in_the_config_lands_nowhere(tmp_path):
    # MLFLOW_TRACKING_URI (set by run_app) wins over the config's URI, so the run is logged
    # to the test's store while the config holds a URI with a password
    uri = "http://ann:hunter2@x/y:z#w%40v u@127.0.0.1:1"  # @ / : # %40 and a space
    done = run_app(tmp_path, "grid.rows=2", "grid.columns=2", f"mlflow.tracking_uri='{uri}'")
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
    for secret in ("x/y", "z#w", "%40v", "v u@"):
        assert secret not in summary_text and secret not in logged
        assert secret not in summary.read_text()
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):  # hydra.yaml: it twice
        (config,) = artifacts.glob(f"**/artifacts/hydra/{name}")
        assert "hunter2" not in config.read_text() and "***@127.0.0.1:1" in config.read_text()
