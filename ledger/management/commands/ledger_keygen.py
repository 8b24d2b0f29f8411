from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management.base import BaseCommand

from ledger import signing


class Command(BaseCommand):
    help = (
        "Print a new Ed25519 checkpoint signing seed (for LEDGER_SIGNING_KEY) and its public key "
        "and key id. Nothing is stored: put the seed in the env file or a Docker secret."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--seed-only", action="store_true", help="print only the seed (for a secret file)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        seed = secrets.token_hex(32)
        public = signing.raw_public(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)))
        if options["seed_only"]:
            self.stdout.write(seed)
            return
        self.stdout.write(f"LEDGER_SIGNING_KEY={seed}")
        self.stdout.write(f"key_id={signing.key_id_for(public)}")
        self.stdout.write(f"public_key={public.hex()}")
