"""The layers of docs/layout.md: stated in pyproject.toml, every module in one, each
importing only those below it, and the Hydra config turned into typed values at the top."""

import ast
import tomllib

from runner import REPO_ROOT
from runner.choices import MODES
from runner.execution.strategies import STRATEGIES

# where a function may take the Hydra config: the apps, the config module, Hydra's callbacks
TAKES_THE_HYDRA_CONFIG = {"app.py", "config.py", "sweep.py", "train.py"}


def _contracts() -> list[dict]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]


def _layers() -> list[list[str]]:
    (contract,) = [c for c in _contracts() if c["type"] == "layers"]
    return [[name.strip() for name in layer.split(":")] for layer in contract["layers"]]


def _modules() -> list[str]:
    found = []
    for path in sorted((REPO_ROOT / "runner").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if parts[-1] != "__init__":
            found.append(".".join(parts))
    return found


def test_every_module_is_in_a_layer():
    """A new module outside every layer would escape the contract unseen."""
    named = [name for layer in _layers() for name in layer]
    outside = [m for m in _modules() if not any(m == n or m.startswith(n + ".") for n in named)]
    assert outside == []


def test_each_layer_imports_only_the_layers_below_it(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(REPO_ROOT)  # where pyproject.toml states the contract
    assert lint_imports(no_cache=True) == 0, capsys.readouterr().out[-3000:]
    assert "2 kept, 0 broken" in capsys.readouterr().out


def test_no_two_modules_of_a_package_import_each_other():
    """Siblings of a layer may import each other, but one way round only: the contract
    that says so covers the whole package, every depth."""
    circles = [c for c in _contracts() if c["type"] == "acyclic_siblings"]
    assert [c["ancestors"] for c in circles] == [["runner"]]


def test_each_module_name_is_one_module():
    """A traceback or an import line names a module by its last part: two ``compare`` in
    two layers left a reader guessing which one."""
    names = [module.rsplit(".", 1)[-1] for module in _modules()]
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_no_function_below_the_app_takes_the_hydra_config():
    """Neither by its type (``DictConfig``, annotated or imported) nor by the name every
    function of the app gives it (``cfg``), annotated or not."""
    takers = []
    for path in sorted((REPO_ROOT / "runner").rglob("*.py")):
        if path.name in TAKES_THE_HYDRA_CONFIG and path.parent.name == "runner":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "omegaconf":
                takers += [f"{path.name} imports {a.name}" for a in node.names
                           if a.name in ("DictConfig", "OmegaConf")]  # fmt: skip
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]
                if any(
                    a.arg == "cfg" or "DictConfig" in ast.unparse(a.annotation or ast.Constant(""))
                    for a in arguments
                ):
                    takers.append(f"{path.relative_to(REPO_ROOT)}:{node.name}")
    assert takers == []


def test_the_config_and_execution_name_the_same_modes():
    assert tuple(STRATEGIES) == MODES
