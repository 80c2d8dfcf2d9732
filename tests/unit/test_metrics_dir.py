"""Where processes write their metrics: set up for serve and worker, cleaned of dead processes only."""
import os
import subprocess
import sys

from app.adapters import metrics_dir


def test_prepare_keeps_a_given_directory_and_clears_only_dead_processes(tmp_path, monkeypatch):
    monkeypatch.setenv(metrics_dir.ENV, "")  # unset for prepare; restored (removed) after the test
    path = metrics_dir.prepare(tmp_path)
    assert path == tmp_path / "metrics" and os.environ[metrics_dir.ENV] == str(path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for name in (f"counter_{dead}.db", f"histogram_{dead}.db", f"counter_{os.getpid()}.db", "notes.txt"):
        (path / name).write_bytes(b"")
    assert metrics_dir.prepare(tmp_path / "elsewhere", clean=True) == path  # the variable, once set, wins
    assert sorted(f.name for f in path.iterdir()) == sorted([f"counter_{os.getpid()}.db", "notes.txt"])


def _counted(path) -> dict:
    from prometheus_client.multiprocess import MultiProcessCollector

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in MultiProcessCollector.merge([str(f) for f in path.glob("*.db")]) for s in metric.samples}


def test_a_dead_process_counts_still_count_after_the_clean(tmp_path, monkeypatch):
    """An API restarted under RQ workers that live on: the sums over processes never go down (Prometheus
    would read a drop as a counter reset), across cleans, while the dead processes' files go."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    monkeypatch.setenv(metrics_dir.ENV, str(tmp_path))
    dead = [subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(2)]
    delivered = mmap_key("payrouter_webhook_deliveries", "payrouter_webhook_deliveries_total", ["outcome"],
                         ["succeeded"], "attempts")
    lag = mmap_key("payrouter_callback_lag_seconds", "payrouter_callback_lag_seconds_bucket", ["le"], ["1.0"],
                   "lag")

    def write(pid: str, deliveries: float) -> None:
        for kind, key in (("counter", delivered), ("histogram", lag)):
            values = MmapedDict(str(tmp_path / f"{kind}_{pid}.db"))
            values.write_value(key, deliveries, 0.0)
            values.close()

    write(dead[0], 5)
    write(str(os.getpid()), 2)  # a worker that lives on
    before = _counted(tmp_path)
    assert before[("payrouter_webhook_deliveries_total", (("outcome", "succeeded"),))] == 7
    metrics_dir.prepare(tmp_path, clean=True)
    assert _counted(tmp_path) == before
    assert not (tmp_path / f"counter_{dead[0]}.db").exists() and not (tmp_path / f"histogram_{dead[0]}.db").exists()
    write(dead[1], 4)  # another process came and went: the archive adds it to what it kept
    metrics_dir.prepare(tmp_path, clean=True)
    assert _counted(tmp_path)[("payrouter_webhook_deliveries_total", (("outcome", "succeeded"),))] == 11
    assert _counted(tmp_path)[("payrouter_callback_lag_seconds_bucket", (("le", "1.0"),))] == 11
