"""Where the processes of one install write their metrics (prometheus-client's multiprocess mode).

``payrouter serve`` and ``payrouter worker`` call ``prepare`` before anything imports
prometheus_client (it chooses its mode at import): PROMETHEUS_MULTIPROC_DIR as given, else
``<var dir>/metrics``. API and workers of one install share it, so ``GET /metrics`` on any API
process counts them all. ``serve`` clears it at start of the files of processes no longer
running (live workers keep theirs); gunicorn's child_exit hook marks a dead worker's live
gauges gone (``worker_exited``). No prometheus_client import here at module level.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def prepare(var_dir: Path, clean: bool = False) -> Path:
    """Set PROMETHEUS_MULTIPROC_DIR (kept if the operator set it) and create the directory;
    ``clean``: delete the files of processes that are gone (at server start)."""
    path = Path(os.environ.get(ENV) or var_dir / "metrics")
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    if clean:
        for file in path.iterdir():
            match = _FILE.match(file.name)
            if match and not _alive(int(match.group(1))):
                file.unlink(missing_ok=True)
    return path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_exited(_server, worker) -> None:
    """gunicorn's child_exit hook: the worker's live gauges no longer count."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
