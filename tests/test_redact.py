"""Credentials in a tracking URI or a secret-looking key never reach the store."""

import json
import os
from urllib.parse import quote

import mlflow
import pytest
import yaml

from runner.credentials import PASSWORD as PASSWORD_VAR
from runner.credentials import (
    USERINFO,
    USERNAME,
    adopt,
    adopt_from_environment,
    adopt_from_overrides,
    with_userinfo,
)
from runner.errors import InputError
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


def test_redaction_hides_a_password_that_looks_like_a_setting():
    assert redact("http://u:p,q=1@h") == "http://***@h"
    assert redact("http://u:p q=1@h/x") == "http://***@h/x"
    assert redact("x http://h:1/ ok\nhttp://a:b@c d") == "x http://h:1/ ok\nhttp://***@c d"


PASSWORD = "hun@ter/2:x#y%z,q=1 w"  # every character that needs care, and some that do not
ENCODED = quote(PASSWORD, safe="")


@pytest.mark.usefixtures("made_store")
def test_a_password_on_the_command_line_lands_nowhere(tmp_path):
    """Taken out of the override before Hydra writes its files: the run's record holds the
    URI without it. MLFLOW_TRACKING_URI (run_app's store) wins, so the run is logged there."""
    uri = f"http://ann:{ENCODED}@127.0.0.1:1/x"
    done = run_app(tmp_path, "grid.rows=2", "grid.columns=2", f"mlflow.tracking_uri={uri}")
    assert done.returncode == 0, done.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gridbench").experiment_id])
    assert run.data.params["mlflow.tracking_uri"] == "http://127.0.0.1:1/x"
    logged = json.dumps([run.data.params, run.data.tags, run.info.run_name])
    files = [path.read_bytes().decode(errors="replace") for path in tmp_path.rglob("*")
             if path.is_file() and path.suffix in (".yaml", ".json", ".log", ".txt")]  # fmt: skip
    assert len(files) >= 5  # Hydra's three, the summary, the logged summary and config
    for text in (done.stdout, done.stderr, logged, *files):
        for secret in (ENCODED, "hun@ter", "ter/2", "ter%2F2", "1 w", "1%20w"):
            assert secret not in text


@pytest.mark.parametrize("password", ["p@ss", "pa/ss", "pa#ss", "pa?ss", "pa ss", "p%zz"])
def test_a_userinfo_not_percent_encoded_is_refused_without_showing_it(password):
    with pytest.raises(InputError, match="percent-encode it") as refused:
        adopt(f"http://ann:secret{password}@127.0.0.1:1")
    assert "secret" not in str(refused.value) and "ann" not in str(refused.value)


def test_a_password_not_percent_encoded_is_refused_before_hydra_writes(tmp_path):
    """Part of it would be read as the host (a password ``Zq7@k/9`` sent the credentials
    to host ``k``): refused in one line, before Hydra writes anything."""
    uri = "http://ann:secretZq7@k/9:x#y@127.0.0.1:1"
    done = run_app(tmp_path, "grid.rows=2", "grid.columns=2", f"mlflow.tracking_uri='{uri}'")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: mlflow.tracking_uri: its user name or password holds ")
    assert "percent-encode it" in line and "secret" not in line and "ann" not in line
    assert not (tmp_path / "run").exists()


def test_credentials_travel_by_the_environment(monkeypatch):
    for key in (USERNAME, PASSWORD_VAR, USERINFO):  # recorded, so that they go afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    assert adopt(f"https://ann:{ENCODED}@h:5000/p") == "https://h:5000/p"
    assert (os.environ[USERNAME], os.environ[PASSWORD_VAR]) == ("ann", PASSWORD)
    assert adopt("postgresql+psycopg2://u:p%40w@db:5432/m") == "postgresql+psycopg2://db:5432/m"
    assert with_userinfo("postgresql+psycopg2://db:5432/m") == (
        "postgresql+psycopg2://u:p%40w@db:5432/m"  # put back only where the store is opened
    )
    assert with_userinfo("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert adopt("sqlite:////tmp/a@b/x.db") == "sqlite:////tmp/a@b/x.db"  # no authority
    assert adopt_from_overrides(["+mlflow.tracking_uri='http://a:b@h'", "threads=2"]) == [
        "+mlflow.tracking_uri='http://h'", "threads=2",
    ]  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://u2:p2@h2")
    adopt_from_environment()
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://h2"
    assert os.environ[PASSWORD_VAR] == "p2"


def test_query_form_passwords_env_set_and_echoed_headers_are_taken_out(monkeypatch):
    """libpq's ``?user=&password=`` go to the environment as a userinfo, put back where the
    store is opened; Hydra's ``env_set`` of the URI is adopted as ``mlflow.tracking_uri``
    is; a server's echo of the request's Authorization header is hidden."""
    for key in (USERNAME, PASSWORD_VAR, USERINFO):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    uri = f"postgresql://db:5432/m?user=ann&password={ENCODED}&sslmode=require"
    assert adopt(uri) == "postgresql://db:5432/m?sslmode=require"
    assert with_userinfo("postgresql://db:5432/m?sslmode=require") == (
        f"postgresql://ann:{ENCODED}@db:5432/m?sslmode=require"
    )
    assert adopt("postgresql://db/m?sslmode=require") == "postgresql://db/m?sslmode=require"
    # the user before the @, the password in the query: it went to Hydra's files as written
    assert adopt(f"postgresql://ann@db/m?password={ENCODED}") == "postgresql://db/m"
    assert with_userinfo("postgresql://db/m") == f"postgresql://ann:{ENCODED}@db/m"
    override = "+hydra.job.env_set.MLFLOW_TRACKING_URI=http://ann:PW2@h"
    assert adopt_from_overrides([override]) == ["+hydra.job.env_set.MLFLOW_TRACKING_URI=http://h"]
    assert os.environ[PASSWORD_VAR] == "PW2"
    echoed = 'error: 400 {"headers": {"Authorization": "Basic YW5uOlBXMg=="}}'
    assert "YW5uOlBXMg" not in redact(echoed) and "Basic ***" in redact(echoed)
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"


def test_an_address_without_a_scheme_hides_its_userinfo():
    """``ray.address=ann:PW@host:port`` that Hydra cannot parse came back whole in its
    error line; an address with a scheme keeps it, one without a user is untouched."""
    said = "error: LexerNoViableAltException: ray.address=ann:Zq7s3cr3t@k/9:x#y@127.0.0.1:9"
    assert redact(said) == "error: LexerNoViableAltException: ray.address=***@127.0.0.1:9"
    assert redact("tracking_uri=http://ann:pw@h:5000") == "tracking_uri=http://***@h:5000"
    assert redact("ray.address=127.0.0.1:6379") == "ray.address=127.0.0.1:6379"
