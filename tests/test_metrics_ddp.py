"""The metrics synced over 2 DDP ranks (gloo, CPU) equal the 1-process value, with an odd number of images.

The worker processes import only torch and ``pspl_lightning.metrics`` (the SR images are made here and
shipped in a file), so that they start in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pspl_lightning.metrics import PSNR, SSIM, psnr_y, ssim_y

SCALE = 2


def _make_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(SR float32, HR uint8) of 5 photos (odd on purpose): a tiny EDSR on MATLAB-bicubic LR images."""
    from skimage import data as skdata

    from pspl_lightning.archs import EDSR
    from pspl_lightning.imresize import make_lr

    hrs = [skdata.chelsea()[:96, :120], skdata.coffee()[:64, :96], skdata.astronaut()[:80, :80],
           skdata.rocket()[:72, :104], skdata.immunohistochemistry()[:64, :64]]
    torch.manual_seed(0)
    net = EDSR(SCALE, n_resblocks=1, n_feats=8).eval()
    pairs = []
    with torch.no_grad():
        for hr in hrs:
            lr = torch.from_numpy(make_lr(hr, SCALE).copy()).permute(2, 0, 1)[None].float() / 255
            pairs.append((net(lr), torch.from_numpy(hr.copy()).permute(2, 0, 1)[None]))
    return pairs


def _worker(rank: int, world: int, folder: str) -> None:
    # a file rendezvous in the test's own folder: no TCP port that another process could take meanwhile
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    psnr_m, ssim_m = PSNR(crop_border=SCALE), SSIM(crop_border=SCALE)
    for sr, hr in torch.load(Path(folder) / "pairs.pt")[rank::world]:  # rank 0: images 0, 2, 4; rank 1: 1, 3
        psnr_m.update(sr, hr)
        ssim_m.update(sr, hr)
    local_count = int(psnr_m.count)
    psnr_v, ssim_v = psnr_m.compute().item(), ssim_m.compute().item()  # compute() syncs sums and counts
    with psnr_m.sync_context():
        synced_count = int(psnr_m.count)
    torch.save([psnr_v, ssim_v, synced_count, local_count], Path(folder) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_synced_metrics_equal_the_single_process_value(tmp_path: Path) -> None:
    pairs = _make_pairs()
    torch.save(pairs, tmp_path / "pairs.pt")
    psnrs = [psnr_y(sr, hr, SCALE).item() for sr, hr in pairs]
    single_psnr, single_ssim = np.mean(psnrs), np.mean([ssim_y(sr, hr, SCALE).item() for sr, hr in pairs])
    assert max(psnrs) - min(psnrs) > 0.5  # a duplicated image would move the mean

    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for rank, local in ((0, 3), (1, 2)):
        psnr_v, ssim_v, count, local_count = torch.load(tmp_path / f"rank{rank}.pt")
        assert (count, local_count) == (5, local)  # every image exactly once over the ranks
        # float64 sums added in another order: equal far below the 0.01 dB that tables print
        assert psnr_v == pytest.approx(single_psnr, abs=1e-10)
        assert ssim_v == pytest.approx(single_ssim, abs=1e-12)
