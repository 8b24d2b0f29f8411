"""`python -m ledger.tests.evm_sequencer_process MODE`: one run of the chain's sequencer in a
process of its own, for the crash tests (test_evm_withdrawals.py). MODE:

- run: an ordinary run;
- kill-before-broadcast: the process SIGKILLs itself once the signed transaction is committed,
  before the node has it;
- kill-after-broadcast: it SIGKILLs itself as soon as the node has it, before it records that.

The database and the node come from the environment the test passes (DATABASE_URL, evm.env())."""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from ledger.evm import sequencer

    mode = sys.argv[1]
    send_raw = sequencer._send_raw

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "kill-before-broadcast":
        sequencer._send_raw = lambda w3, tx: die()  # type: ignore[assignment,misc,return-value]
    elif mode == "kill-after-broadcast":

        def sent_then_die(w3, tx):  # type: ignore[no-untyped-def]
            send_raw(w3, tx)
            die()

        sequencer._send_raw = sent_then_die
    report = sequencer.sequencer_run()
    print(report)


if __name__ == "__main__":
    main()
