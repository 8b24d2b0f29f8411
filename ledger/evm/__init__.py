"""Ethereum through JSON-RPC: deposit addresses, the deposit watcher, the withdrawal sequencer,
sweeps and the proof of reserves. Any node that speaks the standard JSON-RPC (EVM_RPC_URL); the
tests and `make run` use a local Anvil node. Configured per asset in settings.EVM_ASSETS."""
