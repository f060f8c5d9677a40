"""``python -m runner.compare``: the short name of ``python -m runner.analysis.compare``."""

if __name__ == "__main__":
    __import__("runpy").run_module("runner.analysis.compare", run_name="__main__", alter_sys=True)
