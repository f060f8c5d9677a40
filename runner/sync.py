"""``python -m runner.sync RUN_DIR ...``: the short name of ``runner.tracking.sync``, which
logs runs whose tracking failed once the store is back."""

import sys

from runner.tracking.sync import main

if __name__ == "__main__":
    sys.exit(main())
