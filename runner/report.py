"""``python -m runner.report``: the short name of ``python -m runner.analysis.report``."""

if __name__ == "__main__":
    __import__("runpy").run_module("runner.analysis.report", run_name="__main__", alter_sys=True)
