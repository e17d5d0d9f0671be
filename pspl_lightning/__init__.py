"""pspl-lightning: Pixel-level Self-Paced Learning for super-resolution on Lightning + Hydra."""

__version__ = "0.1.0"

from pspl_lightning.interop import install_spandrel_hook  # noqa: E402 (after the version)

install_spandrel_hook()  # spandrel learns EDSR and RDN when it is imported (imports nothing heavy)
