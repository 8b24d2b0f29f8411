"""`python -m tests.faults.worker`: a real `celery worker` for the fault tests.

It is the product's worker (config.celery's app, the settings from the environment) with two
test-only knobs, both from the environment:

- FAULTS_QUEUE: the queue it consumes (-Q) and routes every task it sends to, so a test's tasks
  reach this worker only and never the session-wide worker of conftest.py, which the tests
  must not kill;
- FAULTS_SETTLE_DELAY: seconds each settlement sleeps after its writes, inside the batch's
  still-open transaction, so that a SIGKILL lands in the middle of a batch and not between
  two (a slow database or a busy machine, made reproducible);
- FAULTS_GO_FILE: once Django and the tasks are loaded, wait for this file to exist before
  starting the worker (a warm standby: a restart takes a fraction of a second, not seconds).
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from config.celery import app

    # The tasks and the worker's own modules, loaded before the go signal.
    app.loader.import_default_modules()
    import celery.apps.worker
    import celery.concurrency.thread
    import celery.worker.consumer  # noqa: F401

    app.conf.task_routes = {"*": {"queue": os.environ["FAULTS_QUEUE"]}}
    delay = float(os.environ.get("FAULTS_SETTLE_DELAY") or 0)
    if delay > 0:
        from escrow.services import settlement

        settle_one = settlement._settle_one

        def slow_settle_one(settlement, trade):
            settle_one(settlement, trade)
            time.sleep(delay)

        settlement._settle_one = slow_settle_one
    go_file = os.environ.get("FAULTS_GO_FILE")
    if go_file:
        while not os.path.exists(go_file):
            time.sleep(0.005)
    app.worker_main(["worker", *sys.argv[1:]])


if __name__ == "__main__":
    main()
