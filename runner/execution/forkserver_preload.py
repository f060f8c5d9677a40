"""What the forkserver imports before it forks any worker (``set_forkserver_preload``).

The modules the workers need, loaded once; and the forkserver's life tied to the run's: it
would otherwise outlive a run killed outright (SIGKILL, the OOM killer), since every worker
it forked keeps it alive, and the workers wait on it forever. Imported nowhere else.
"""

from runner.children import die_with_parent

die_with_parent()

import runner.execution.parallel  # noqa: E402,F401 - what the workers run, loaded once
from runner.execution.backends import without_openvino_telemetry  # noqa: E402

without_openvino_telemetry()  # before the preload imports openvino: no thread to fork past
