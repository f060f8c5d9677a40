"""``python -m runner.sync``: the short name of ``python -m runner.tracking.sync``."""

if __name__ == "__main__":
    __import__("runpy").run_module("runner.tracking.sync", run_name="__main__", alter_sys=True)
