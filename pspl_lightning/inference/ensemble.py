"""The x8 self-ensemble ("EDSR+"): the SR of each flip/rotation of the input, mapped back and averaged."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Forward = Callable[[Tensor], Tensor]


def _transform(x: Tensor, hflip: bool, vflip: bool, transpose: bool) -> Tensor:
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if transpose:
        x = x.transpose(-2, -1)
    return x


def _inverse(x: Tensor, hflip: bool, vflip: bool, transpose: bool) -> Tensor:
    if transpose:
        x = x.transpose(-2, -1)
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    return x


DIHEDRAL = [(h, v, t) for t in (False, True) for v in (False, True) for h in (False, True)]


def self_ensemble(forward: Forward, lr: Tensor) -> Tensor:
    """Mean of ``inverse_g(forward(g(lr)))`` over the 8 flips/transposes ``g`` (EDSR's ``forward_x8``).

    The average is accumulated in float64 and returned in the dtype of ``forward``'s output.
    """
    total: Tensor | None = None
    for hflip, vflip, transpose in DIHEDRAL:
        sr = _inverse(forward(_transform(lr, hflip, vflip, transpose)), hflip, vflip, transpose)
        total = sr.double() if total is None else total + sr.double()
    assert total is not None
    return (total / len(DIHEDRAL)).to(sr.dtype)
