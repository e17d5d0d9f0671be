"""The resumable sampler: deterministic per seed, disjoint DDP shards, exact mid-epoch continuation."""

from __future__ import annotations

import pytest

from pspl_lightning.data.sampling import ResumableRandomSampler


def test_epoch_is_a_permutation_and_depends_on_seed_and_epoch() -> None:
    s = ResumableRandomSampler(20, batch_size=4, seed=7)
    first = [i for i, _ in s]
    assert sorted(first) == list(range(20))
    s.set_epoch(1)
    assert [i for i, _ in s] != first
    s.set_epoch(0)
    assert [i for i, _ in s] == first
    assert [i for i, _ in ResumableRandomSampler(20, 4, seed=8)] != first


def test_ranks_take_disjoint_shards_of_equal_length() -> None:
    shards = [list(ResumableRandomSampler(23, 3, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 9  # 23 // 2 = 11 items, 3 full batches of 3
    assert not {i for i, _ in shards[0]} & {i for i, _ in shards[1]}
    assert not {s for _, s in shards[0]} & {s for _, s in shards[1]}


def test_resuming_from_a_position_continues_the_same_stream() -> None:
    position = {"batches": 0}
    straight = []
    for epoch in range(3):
        s = ResumableRandomSampler(12, 4, seed=3)
        s.set_epoch(epoch)
        straight += list(s)
    position["batches"] = 1  # resumed in epoch 1 after its first batch
    resumed = ResumableRandomSampler(12, 4, seed=3, position_fn=lambda: position["batches"])
    resumed.set_epoch(1)
    assert list(resumed) == straight[16:24]


def test_too_few_items_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="raise data.repeat"):
        ResumableRandomSampler(5, batch_size=4, world_size=2)


def test_shards_cover_every_item_once() -> None:
    from pspl_lightning.data.sampling import ShardSampler

    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4, -1], [2, 5, -1]]  # equal lengths: no rank waits for the others
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 3, 3]
    assert list(ShardSampler(2, 2, 3)) == [-1]  # more ranks than images


def test_padding_items_are_marked() -> None:
    import numpy as np

    from pspl_lightning.data.datasets import PairDataset

    img = np.zeros((4, 4, 3), dtype=np.uint8)
    ds = PairDataset([(img, img)])
    assert len(ds[0]) == 2
    *_, keep = ds[-1]
    assert not keep


def test_patches_depend_on_sample_seed_only() -> None:
    import numpy as np

    from pspl_lightning.data.datasets import PatchDataset

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pairs = [(hr[::2, ::2].copy(), hr)]
    ds = PatchDataset(pairs, scale=2, patch_size=16, repeat=4)
    a = ds.__getitems__([(0, 11), (0, 12)])
    b = ds.__getitems__([(0, 12)])
    assert (a[1][1] == b[1][0]).all() and (a[0][1] == b[0][0]).all()
    assert not (a[1][0] == a[1][1]).all()
    single = ds[(0, 11)]
    assert (single[1] == a[1][0]).all()


def test_epochs_hold_whole_optimizer_steps_under_accumulation() -> None:
    s = ResumableRandomSampler(22, batch_size=2, batches_multiple_of=3)  # 11 batches -> 9 (3 steps of 3)
    assert s.batches_per_epoch == 9 and len(s) == 18
    with pytest.raises(ValueError, match="accumulate_grad_batches=12"):
        ResumableRandomSampler(22, batch_size=2, batches_multiple_of=12)
