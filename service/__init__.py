"""Tactful's service, one package per reason to change: api (HTTP), decision, store, policy,
learning, offline, simulation and cli; runtime.py builds engines and learners
(docs/architecture.md maps them)."""
__version__ = "0.1.0"
