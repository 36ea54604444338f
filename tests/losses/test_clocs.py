"""The CLOCS loss against hand-written references: the paper's equations, the authors' code, 2 gloo workers."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch

from ecg_ray.losses.clocs import clocs_loss, clocs_uniform_loss
from tests.gloo import run_gloo

WORLD = 2
# ids 1 and 2 have rows on both ranks (rows 0-3 on rank 0, 4-7 on rank 1); 3 appears twice on rank 1
SHARED_IDS = torch.tensor([0, 1, 2, 5, 1, 3, 3, 2])


def paper_reference(views: torch.Tensor, ids: list[int], tau: float) -> float:
    """Plain loops over the paper's terms: every ordered pair of views (A, B), every anchor i of A, the mean
    over its positives k in B (same id, itself included) of -log(exp(s_ik / tau) / sum_j exp(s_ij / tau))."""
    n, n_views, _ = views.shape
    unit = views / views.norm(dim=-1, keepdim=True)
    pair_losses = []
    for a in range(n_views):
        for b in range(n_views):
            if a == b:
                continue
            anchors = []
            for i in range(n):
                denominator = sum(math.exp(float(unit[i, a] @ unit[j, b]) / tau) for j in range(n))
                terms = [-math.log(math.exp(float(unit[i, a] @ unit[k, b]) / tau) / denominator)
                         for k in range(n) if ids[k] == ids[i]]
                anchors.append(sum(terms) / len(terms))
            pair_losses.append(sum(anchors) / n)
    return sum(pair_losses) / len(pair_losses)


def authors_reference(views: torch.Tensor, pids: list[int]) -> float:
    """The authors' obtain_contrastive_loss (CMSC/CMLC/CMSMLC branch, tau 0.1) in plain loops, defects included:
    ``loss =`` keeps only the last view pair, off-diagonal positives count for one anchor of each pair."""
    n, n_views, _ = views.shape
    upper = [(i, j) for i in range(n) for j in range(n) if i < j and pids[i] == pids[j]]
    lower = [(i, j) for i in range(n) for j in range(n) if i > j and pids[i] == pids[j]]
    loss, ncombinations, loss_terms = 0.0, 0, 0
    for a, b in combinations(range(n_views), 2):
        v1, v2 = views[:, a], views[:, b]
        s = [[math.exp(float(v1[i] @ v2[j]) / (float(v1[i].norm() * v2[j].norm()) * 0.1)) for j in range(n)]
             for i in range(n)]
        row = [sum(s[i]) for i in range(n)]
        col = [sum(s[i][j] for i in range(n)) for j in range(n)]
        loss_diag1 = -sum(math.log(s[i][i] / row[i]) for i in range(n)) / n
        loss_diag2 = -sum(math.log(s[i][i] / col[i]) for i in range(n)) / n
        loss, loss_terms = loss_diag1 + loss_diag2, 2
        if upper:
            loss += -sum(math.log(s[i][j] / row[i]) for i, j in upper) / len(upper)
            loss_terms += 1
        if lower:
            loss += -sum(math.log(s[i][j] / col[j]) for i, j in lower) / len(lower)
            loss_terms += 1
        ncombinations += 1
    return loss / (loss_terms * ncombinations)


def _views(n: int, n_views: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, n_views, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n_views,ids", [(2, [0, 1, 2, 3, 4, 5]), (2, [0, 1, 0, 2, 1, 0]),
                                         (3, [0, 1, 2, 3, 4, 5]), (4, [7, 7, 1, 2, 1, 9])])
def test_loss_equals_the_papers_terms_in_loops(n_views, ids):
    views = _views(len(ids), n_views)
    loss = clocs_loss(views, torch.tensor(ids), temperature=0.1, gather=False)
    assert loss.item() == pytest.approx(paper_reference(views, ids, 0.1), rel=1e-10)
    other = clocs_loss(views, torch.tensor(ids), temperature=0.5, gather=False)
    assert other.item() == pytest.approx(paper_reference(views, ids, 0.5), rel=1e-10)


def test_with_one_positive_per_anchor_the_authors_code_gives_the_same_value():
    # CMSC (2 views), every id once: the authors' (diag1 + diag2) / 2 is the paper's loss and ours.
    views = _views(6, 2, seed=1)
    ids = list(range(6))
    assert clocs_loss(views, torch.tensor(ids), gather=False).item() == pytest.approx(
        authors_reference(views, ids), rel=1e-10)


def test_departures_from_the_authors_code_change_the_value():
    # Shared patients: their one-sided off-diagonal terms weigh positives differently ...
    views, pids = _views(6, 2, seed=2), [0, 1, 0, 2, 1, 0]
    assert abs(clocs_loss(views, torch.tensor(pids), gather=False).item() - authors_reference(views, pids)) > 1e-3
    # ... and with 3 views their loop keeps only the last pair's terms (divided by 3 pairs).
    views, ids = _views(6, 3, seed=3), list(range(6))
    last_pair_only = authors_reference(views[:, 1:], ids) / 3
    assert authors_reference(views, ids) == pytest.approx(last_pair_only, rel=1e-12)
    assert clocs_loss(views, torch.tensor(ids), gather=False).item() == pytest.approx(
        paper_reference(views, ids, 0.1), rel=1e-10)


def test_uniform_value_when_every_embedding_is_the_same():
    views = torch.ones(8, 3, 4)
    loss = clocs_loss(views, torch.arange(8), temperature=0.1, gather=False)
    assert loss.item() == pytest.approx(clocs_uniform_loss(8, 1)) == pytest.approx(math.log(8))


def test_loss_falls_when_views_of_one_id_are_pulled_together():
    views = _views(8, 2, dim=8, seed=4).float().requires_grad_()
    ids = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5])
    optimizer = torch.optim.SGD([views], lr=0.5)
    losses = []
    for _ in range(30):
        loss = clocs_loss(views, ids, gather=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("views,ids,temperature,message", [
    (torch.zeros(4, 2), torch.arange(4), 0.1, "views \\(n, V, D\\)"),
    (torch.zeros(4, 2, 3), torch.arange(3), 0.1, "ids \\(n,\\)"),
    (torch.zeros(4, 1, 3), torch.arange(4), 0.1, "at least 2 views"),
    (torch.zeros(4, 2, 3), torch.arange(4), 0.0, "temperature must be positive"),
])
def test_bad_input_is_refused(views, ids, temperature, message):
    with pytest.raises(ValueError, match=message):
        clocs_loss(views, ids, temperature=temperature, gather=False)


# --- 2 gloo workers: gathered candidates give the single-process loss and gradient ------------------------

def _rank_loss(rank: int, views: torch.Tensor) -> dict:
    half = slice(rank * 4, rank * 4 + 4)
    mine = views[half].clone().requires_grad_()
    loss = clocs_loss(mine, SHARED_IDS[half], temperature=0.1)
    loss.backward()
    return {"loss": loss.item(), "grad": mine.grad}


def test_two_gloo_workers_equal_the_single_process_loss_and_gradient(tmp_path):
    views = _views(8, 3, seed=5)
    outs = run_gloo(_rank_loss, tmp_path, views, world=WORLD)

    full = views.clone().requires_grad_()
    loss = clocs_loss(full, SHARED_IDS, temperature=0.1, gather=False)
    loss.backward()
    assert loss.item() == pytest.approx(paper_reference(views, SHARED_IDS.tolist(), 0.1), rel=1e-10)
    assert sum(o["loss"] for o in outs) / WORLD == pytest.approx(loss.item(), rel=1e-12)
    for r, o in enumerate(outs):  # DDP averages gradients over ranks: each rank holds WORLD x its slice
        torch.testing.assert_close(o["grad"], WORLD * full.grad[r * 4:r * 4 + 4])
    # candidates from the own rank only would be another loss (positives 1 and 2 sit across ranks)
    local = sum(clocs_loss(views[r * 4:r * 4 + 4], SHARED_IDS[r * 4:r * 4 + 4], gather=False).item()
                for r in range(WORLD)) / WORLD
    assert abs(local - loss.item()) > 1e-3
