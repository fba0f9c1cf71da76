"""Closed forms (placeholder)."""
