"""Tactful's service: HTTP app, store, guardrails, decision engine, learner loop and CLI."""
__version__ = "0.1.0"
