"""`make run` and manage.py on a developer's machine: PostgreSQL and Redis from the environment,
else the ones a running `make run` started (it writes their URLs to .data/services.env)."""

from pathlib import Path

import environ

environ.Env.read_env(
    str(Path(__file__).resolve().parent.parent.parent / ".data" / "services.env"),
    overwrite=False,
)
# The local chain's TestUSD address (manage.py evm_setup writes it; make run runs that).
environ.Env.read_env(
    str(Path(__file__).resolve().parent.parent.parent / ".data" / "evm.env"), overwrite=False
)

from .base import *  # noqa: E402, F403
from .base import BASE_DIR, EVM_HOT_WALLET_ADDRESS, EVM_RPC_URL, EVM_XPUB, LEDGER_SIGNING_KEY, env  # noqa: E402

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="local-dev-only-not-secret")
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# make run: a local checkpoint key, created on first use and kept out of git.
_KEY_FILE = BASE_DIR / ".ledger-signing-key"
if not LEDGER_SIGNING_KEY:
    if not _KEY_FILE.exists():
        import secrets

        _KEY_FILE.write_text(secrets.token_hex(32))
        _KEY_FILE.chmod(0o600)
    LEDGER_SIGNING_KEY = _KEY_FILE.read_text().strip()

# A developer's terminal reads plain lines; LOG_FORMAT=json gives production's JSON.
from operations.logs import logging_config  # noqa: E402

LOGGING = logging_config(
    level=env("LOG_LEVEL", default="INFO"), json=env("LOG_FORMAT", default="plain") == "json"
)

# --- EVM (make run's local chain: docs/chain.md) ---
# Two confirmations: with Anvil's block every ANVIL_BLOCK_TIME seconds a deposit is credited in
# seconds. On the local node only (127.0.0.1), the deposit account and the hot wallet default to
# LOCAL DEVELOPMENT KEYS from the public test mnemonic (ledger/evm/devchain.py): the web process
# gets the xpub and the hot wallet's address; scripts/run.sh gives the private keys to the
# worker alone. Production sets EVM_XPUB and the rest in its environment.
EVM_CONFIRMATIONS = env.int("EVM_CONFIRMATIONS", default=2)
if EVM_RPC_URL.startswith(("http://127.0.0.1:", "http://localhost:")) and not EVM_XPUB:
    from ledger.evm.devchain import dev_deposit_keys, dev_hot_wallet

    EVM_XPUB = dev_deposit_keys()[0]
    EVM_HOT_WALLET_ADDRESS = EVM_HOT_WALLET_ADDRESS or dev_hot_wallet().address
# --- end EVM ---
# RESERVES (docs/chain.md "Reserves"): the demo reconciles every minute and publishes a proof of
# reserves every 5 minutes, so /reserves/ has one soon after `make run` (production: 5 min, 1 day).
RESERVES_RECONCILE_SECONDS = env.float("RESERVES_RECONCILE_SECONDS", default=60.0)
RESERVES_PROOF_SECONDS = env.float("RESERVES_PROOF_SECONDS", default=300.0)
CELERY_BEAT_SCHEDULE["ledger-reconcile-reserves"]["schedule"] = RESERVES_RECONCILE_SECONDS  # noqa: F405
CELERY_BEAT_SCHEDULE["ledger-publish-reserves-proof"]["schedule"] = RESERVES_PROOF_SECONDS  # noqa: F405
# END RESERVES
