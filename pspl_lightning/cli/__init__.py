"""Command-line entry points (Hydra apps): pspl-train."""
