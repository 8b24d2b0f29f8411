"""Hooks into escrow.services.transition_listeners (called on commit of each transition)."""
