"""ECG-JEPA's multi-block masks: counts and block lengths as configured, context and targets disjoint."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.methods.jepa_masks import block_counts, random_composition, sample_block_masks


def runs(row: list[bool]) -> list[int]:
    """Lengths of the maximal runs of True in ``row``."""
    lengths, current = [], 0
    for value in row:
        if value:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths + ([current] if current else [])


@pytest.mark.parametrize(("patches", "min_block"), [(200, 10), (50, 10), (40, 10), (12, 10), (20, 3)])
def test_masks_have_the_configured_counts_and_blocks(patches, min_block):
    generator = torch.Generator().manual_seed(0)
    for step in range(25):
        scalars = torch.Generator().manual_seed(step)
        masks = sample_block_masks(8, patches, min_keep=0.15, max_keep=0.25, min_block=min_block,
                                   scalar_generator=scalars, generator=generator)
        keep, masked = masks.context.shape[1], masks.target.shape[1]
        assert keep + masked == patches
        assert math.ceil(0.15 * patches) <= keep <= math.ceil(0.25 * patches)
        for context, target in zip(masks.context.tolist(), masks.target.tolist(), strict=True):
            assert context == sorted(context) and target == sorted(target)
            assert sorted(context + target) == list(range(patches))  # disjoint, and together every patch
            is_masked = [False] * patches
            for t in target:
                is_masked[t] = True
            blocks = runs(is_masked)
            assert len(blocks) == masks.blocks
            assert min(blocks) >= min(min_block, masked)  # one block of all M when M < min_block


def test_block_counts_allow_only_blocks_that_fit():
    assert block_counts(200, 0.2, 10) == (40, 160, 16)
    assert block_counts(12, 0.2, 10) == (3, 9, 1)  # fewer masked patches than a block: one block
    assert block_counts(40, 0.01, 10) == (1, 39, 2)  # one kept patch separates at most two blocks
    assert block_counts(4, 0.99, 1) == (3, 1, 1)  # always at least one masked patch


def test_random_composition_sums_and_is_uniform():
    generator = torch.Generator().manual_seed(0)
    parts = random_composition(7, 3, 1000, generator, torch.device("cpu"))
    assert parts.shape == (1000, 3) and (parts >= 0).all() and (parts.sum(1) == 7).all()
    # 2 into 2 parts: (0, 2), (1, 1), (2, 0), each 1/3
    counts = torch.bincount(random_composition(2, 2, 3000, generator, torch.device("cpu"))[:, 0], minlength=3)
    assert ((counts - 1000).abs() < 120).all(), counts


def test_the_counts_depend_on_the_step_seed_alone_the_placement_on_the_device_generator():
    """Every worker (its own device generator) masks the same number of patches in as many blocks."""
    def draw(worker_seed: int):
        return sample_block_masks(4, 100, min_keep=0.15, max_keep=0.25, min_block=10,
                                  scalar_generator=torch.Generator().manual_seed(42),
                                  generator=torch.Generator().manual_seed(worker_seed))

    first, second = draw(0), draw(1)
    assert first.context.shape == second.context.shape and first.blocks == second.blocks
    assert not torch.equal(first.target, second.target)
