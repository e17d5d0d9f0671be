"""Launching sweep jobs: device and thread assignment, and the local parallel Hydra launcher."""
