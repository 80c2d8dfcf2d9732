"""Where the processes of one install write their metrics (prometheus-client's multiprocess mode).

``payrouter serve`` and ``payrouter worker`` call ``prepare`` before anything imports
prometheus_client (it chooses its mode at import): PROMETHEUS_MULTIPROC_DIR as given, else
``<var dir>/metrics``. API and workers of one install share it, so ``GET /metrics`` on any API
process counts them all. ``serve`` clears it at start of the files of processes no longer
running (live workers keep theirs), first adding their counters and histograms to one archive file
per kind, so that the sums never go down; gunicorn's child_exit hook marks a dead worker's live
gauges gone (``worker_exited``). No prometheus_client import here at module level.
"""
from __future__ import annotations

import fcntl
import os
import re
import struct
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")
_KEPT = ("counter", "histogram")  # summed over processes: what a dead process counted still counts


def prepare(var_dir: Path, clean: bool = False) -> Path:
    """Set PROMETHEUS_MULTIPROC_DIR (kept if the operator set it) and create the directory;
    ``clean``: delete the files of processes that are gone (at server start), their counts kept."""
    path = Path(os.environ.get(ENV) or var_dir / "metrics")
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    if clean:
        directory = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(directory, fcntl.LOCK_EX)  # two servers starting at once archive a dead file once
            dead = [file for file in path.iterdir()
                    if (match := _FILE.match(file.name)) and not _alive(int(match.group(1)))]
            for kind in _KEPT:
                _keep_in_archive(path, kind, [file for file in dead if file.name.startswith(kind + "_")])
            for file in dead:
                file.unlink(missing_ok=True)
        finally:
            os.close(directory)  # and the lock with it
    return path


def _keep_in_archive(path: Path, kind: str, files: list[Path]) -> None:
    """Add the values of dead processes' ``kind`` files to ``<kind>_archive.db`` (read like any process's
    file by the collector): a counter summed over the processes never goes down when some of them are
    gone while others live on (an API restarted under RQ workers that keep running), which Prometheus
    would take for a reset and count as a burst of increase."""
    if not files:
        return
    from prometheus_client.mmap_dict import MmapedDict

    archive = path / f"{kind}_archive.db"
    totals: dict[str, float] = {}
    for file in [archive, *files] if archive.exists() else files:
        try:
            values = MmapedDict.read_all_values_from_file(str(file))
        except (OSError, ValueError, struct.error):  # empty or cut short: nothing that can be read to keep
            continue
        for key, value, _timestamp, _pos in values:
            totals[key] = totals.get(key, 0.0) + value
    if not totals:
        return
    fresh = path / f".{kind}_archive.db.new"  # no .db suffix: the collector does not read it half-written
    fresh.unlink(missing_ok=True)
    written = MmapedDict(str(fresh))
    try:
        for key, value in totals.items():
            written.write_value(key, value, 0.0)
    finally:
        written.close()
    os.replace(fresh, archive)


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
