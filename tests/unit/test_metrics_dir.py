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
