"""``python worker.py [QUEUES…]``: RQ worker(s); no queue named means all of them."""
import sys

from app.entrypoints.worker import run_worker

if __name__ == "__main__":
    run_worker(sys.argv[1:])
