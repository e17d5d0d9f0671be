"""pspl-lightning: Pixel-level Self-Paced Learning for super-resolution on Lightning + Hydra."""

__version__ = "0.1.0"
