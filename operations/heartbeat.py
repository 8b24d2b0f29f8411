"""Health check of celery beat: exit 0 when its heartbeat file is younger than MAX_AGE seconds.

    python -m operations.heartbeat [MAX_AGE]   (default 60; the file: BEAT_HEARTBEAT_FILE)

Beat sleeps at most beat_max_loop_interval (CELERY_BEAT_MAX_LOOP_INTERVAL) between passes."""

from __future__ import annotations

import sys
import time

from operations.beat import heartbeat_file


def main(argv: list[str]) -> int:
    max_age = float(argv[0]) if argv else 60.0
    try:
        age = time.time() - heartbeat_file().stat().st_mtime
    except FileNotFoundError:
        print(f"no heartbeat at {heartbeat_file()}", file=sys.stderr)
        return 1
    if age > max_age:
        print(f"beat's heartbeat is {age:.0f}s old (more than {max_age:.0f}s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
