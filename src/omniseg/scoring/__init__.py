"""Scoring: per-image metrics, pure functions on numpy arrays, and their registry (:mod:`.metrics`).

May import only the shared modules: every other stage uses it, it uses none of them.
"""
