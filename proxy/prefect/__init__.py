"""Prefect-specific steps: scoped reads, run stamping, socket frame filters."""
