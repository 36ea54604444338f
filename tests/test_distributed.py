"""Losses under a real 2-process gloo group on CPU equal the single-process losses on the full batch.

Each spawned worker holds one half (or an unequal part) of a batch, computes the losses and
their input gradients, and writes them to a file in tmp_path; the parent compares them with the
same losses computed without a process group on the concatenated batch.

Gradient convention checked (see ecg_ray.distributed): with equal halves, the mean of the
workers' losses is the single-process loss, and each worker's input gradient is
``world_size`` x its slice of the single-process gradient (DDP's averaging of parameter
gradients divides that factor out again). The group rendezvous through a file in tmp_path and
gloo binds to loopback, so this runs in a network namespace with only 127.0.0.1.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ecg_ray import distributed as D
from ecg_ray.losses import byol_loss, cpc_infonce, nt_xent, sinkhorn, swav_loss
from ecg_ray.losses.contrastive import contrastive_loss
from tests.gloo import run_gloo

WORLD = 2
N = 8  # global batch
UNEQUAL = [3, 5]  # rows per rank for the unequal-split checks
# ids of the by-id contrastive loss: ids 1 and 2 have rows on both ranks, every row has a positive
SHARED_IDS = torch.tensor([0, 1, 2, 0, 1, 3, 3, 2])


def make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    return {
        "z1": torch.randn(N, 5, generator=g, dtype=f64),
        "z2": torch.randn(N, 5, generator=g, dtype=f64),
        "scores": torch.randn(N, 6, generator=g, dtype=f64),
        "scores2": torch.randn(N, 6, generator=g, dtype=f64),
        "p": torch.randn(N, 4, generator=g, dtype=f64),
        "cpc_p": torch.randn(N, 5, 3, generator=g, dtype=f64),
        "cpc_z": torch.randn(N, 5, 3, generator=g, dtype=f64),
        "x": torch.randn(sum(UNEQUAL), 3, generator=g, dtype=f64),
        "w": torch.randn(WORLD, sum(UNEQUAL), 3, generator=g, dtype=f64),
    }


def _rows(rank: int, sizes: list[int]) -> slice:
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.clone().requires_grad_()


def worker(rank: int, inputs: dict[str, torch.Tensor]) -> dict:
    """One rank: compute every quantity on its part of the batch and return it to the parent."""
    half = [N // WORLD] * WORLD
    mine = _rows(rank, half)
    out: dict[str, object] = {"world_size": D.world_size(), "rank": D.rank()}

    z1, z2 = _leaf(inputs["z1"][mine]), _leaf(inputs["z2"][mine])
    loss = nt_xent(z1, z2, temperature=0.5)
    loss.backward()
    out |= {"ntxent": loss.item(), "ntxent_g1": z1.grad, "ntxent_g2": z2.grad}

    # By-id positives, some of them on the other rank (patients with records on both workers).
    z = _leaf(inputs["z1"][mine])
    loss = contrastive_loss(z, SHARED_IDS[mine], temperature=0.3)
    loss.backward()
    out |= {"contrastive": loss.item(), "contrastive_g": z.grad}

    # Equal batches declared: the same loss and gradients without the size exchanges.
    real_all_gather, calls = dist.all_gather, []

    def counting_all_gather(*args, **kwargs):
        calls.append(args[1].shape)
        return real_all_gather(*args, **kwargs)

    dist.all_gather = counting_all_gather
    try:
        e1, e2 = _leaf(inputs["z1"][mine]), _leaf(inputs["z2"][mine])
        with D.equal_batches():
            loss = nt_xent(e1, e2, temperature=0.5)
        gathers_declared = len(calls)
        nt_xent(_leaf(inputs["z1"][mine]), _leaf(inputs["z2"][mine]), temperature=0.5)
        gathers_plain = len(calls) - gathers_declared
    finally:
        dist.all_gather = real_all_gather
    loss.backward()
    out |= {"ntxent_equal": loss.item(), "ntxent_equal_g1": e1.grad, "ntxent_equal_g2": e2.grad,
            "gathers_declared": gathers_declared, "gathers_plain": gathers_plain}

    # Unequal parts: weighting each rank's loss by B_r * W / N makes the sum over ranks W x
    # the single-process loss, so the gradients are again W x the single-process slices.
    part = _rows(rank, UNEQUAL)
    u1, u2 = _leaf(inputs["z1"][part]), _leaf(inputs["z2"][part])
    loss = nt_xent(u1, u2, temperature=0.5)
    (loss * UNEQUAL[rank] * WORLD / N).backward()
    out |= {"ntxent_unequal": loss.item(), "ntxent_unequal_g1": u1.grad, "ntxent_unequal_g2": u2.grad}

    out["sinkhorn"] = sinkhorn(inputs["scores"][mine])
    out["sinkhorn_unequal"] = sinkhorn(inputs["scores"][part])
    s1, s2 = _leaf(inputs["scores"][mine]), _leaf(inputs["scores2"][mine])
    loss = swav_loss([s1, s2], {0: sinkhorn(s1), 1: sinkhorn(s2)})
    loss.backward()
    out |= {"swav": loss.item(), "swav_g1": s1.grad, "swav_g2": s2.grad}

    p = _leaf(inputs["p"][mine])
    loss = byol_loss(p, inputs["z1"][mine][:, :4])
    loss.backward()
    out |= {"byol": loss.item(), "byol_g": p.grad}

    cp, cz = _leaf(inputs["cpc_p"][mine]), _leaf(inputs["cpc_z"][mine])
    loss = cpc_infonce(cp, cz, negatives="batch", gather=True)
    loss.backward()
    out |= {"cpc": loss.item(), "cpc_gp": cp.grad, "cpc_gz": cz.grad}

    # gather_with_grad itself: rank r's loss is <gather(x), w_r>, so x_r's gradient must be
    # the sum over ranks of w_s restricted to r's rows.
    x = _leaf(inputs["x"][part])
    gathered = D.gather_with_grad(x)
    (gathered * inputs["w"][rank]).sum().backward()
    out |= {"gathered": gathered.detach(), "gather_g": x.grad,
            "gather_no_grad": D.all_gather_no_grad(inputs["x"][part]),
            "reduced": D.all_reduce_sum(torch.tensor([float(rank + 1)])),
            "offset": D.row_offset(UNEQUAL[rank])}
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    inputs = make_inputs()
    return inputs, run_gloo(worker, tmp_path_factory.mktemp("dist"), inputs, world=WORLD)


def _grads(fn, *tensors):
    leaves = [_leaf(t) for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return loss.item(), [leaf.grad for leaf in leaves]


def test_helpers_are_identity_without_a_group():
    assert not D.is_distributed() and D.world_size() == 1 and D.rank() == 0
    t = torch.randn(3, 2)
    assert D.gather_with_grad(t) is t
    torch.testing.assert_close(D.all_reduce_sum(t), t)
    torch.testing.assert_close(D.all_gather_no_grad(t), t)
    assert D.row_offset(3) == 0


def test_group_basics(results):
    inputs, outs = results
    assert [o["world_size"] for o in outs] == [WORLD, WORLD] and [o["rank"] for o in outs] == [0, 1]
    for o in outs:
        torch.testing.assert_close(o["gathered"], inputs["x"])
        torch.testing.assert_close(o["gather_no_grad"], inputs["x"])
        assert o["reduced"].item() == 3.0
    assert [o["offset"] for o in outs] == [0, UNEQUAL[0]]


def test_gather_with_grad_sums_gradients_over_ranks(results):
    inputs, outs = results
    expected = inputs["w"].sum(dim=0)
    for r, o in enumerate(outs):
        torch.testing.assert_close(o["gather_g"], expected[_rows(r, UNEQUAL)])


def test_contrastive_by_id_equals_single_process_loss_and_gradient(results):
    inputs, outs = results
    loss, (g,) = _grads(lambda z: contrastive_loss(z, SHARED_IDS, temperature=0.3), inputs["z1"])
    assert sum(o["contrastive"] for o in outs) / WORLD == pytest.approx(loss, rel=1e-12)
    half = [N // WORLD] * WORLD
    for r, o in enumerate(outs):
        torch.testing.assert_close(o["contrastive_g"], WORLD * g[_rows(r, half)])
    # ... while positives searched on the own rank only would give another loss.
    local = sum(contrastive_loss(inputs["z1"][_rows(r, half)], SHARED_IDS[_rows(r, half)], 0.3, gather=False).item()
                for r in range(WORLD)) / WORLD
    assert abs(local - loss) > 1e-3


def test_nt_xent_equals_single_process_loss_and_gradient(results):
    inputs, outs = results
    loss, (g1, g2) = _grads(lambda a, b: nt_xent(a, b, temperature=0.5), inputs["z1"], inputs["z2"])
    assert sum(o["ntxent"] for o in outs) / WORLD == pytest.approx(loss, rel=1e-12)
    half = [N // WORLD] * WORLD
    for r, o in enumerate(outs):
        mine = _rows(r, half)
        torch.testing.assert_close(o["ntxent_g1"], WORLD * g1[mine])
        torch.testing.assert_close(o["ntxent_g2"], WORLD * g2[mine])
    # Unequal parts: the per-sample weighted mean of the ranks' losses is the global loss.
    weighted = sum(o["ntxent_unequal"] * UNEQUAL[r] for r, o in enumerate(outs)) / N
    assert weighted == pytest.approx(loss, rel=1e-12)
    for r, o in enumerate(outs):
        part = _rows(r, UNEQUAL)
        torch.testing.assert_close(o["ntxent_unequal_g1"], WORLD * g1[part])
        torch.testing.assert_close(o["ntxent_unequal_g2"], WORLD * g2[part])


def test_equal_batches_skip_the_size_exchange(results):
    """Inside equal_batches NT-Xent gathers only its embeddings and ids (no size collectives, no host reads)."""
    _, outs = results
    for o in outs:
        assert o["gathers_declared"] == 2  # the projections (both views at once) and their ids
        # + the sizes of both gathers and two row offsets (of the sample ids and of the anchors)
        assert o["gathers_plain"] == 6
        assert o["ntxent_equal"] == o["ntxent"]
        torch.testing.assert_close(o["ntxent_equal_g1"], o["ntxent_g1"], rtol=0, atol=0)
        torch.testing.assert_close(o["ntxent_equal_g2"], o["ntxent_g2"], rtol=0, atol=0)


def test_nt_xent_without_gather_would_differ(results):
    # Guards the test itself: the local-negatives loss is a different number.
    inputs, outs = results
    local = sum(nt_xent(inputs["z1"][s], inputs["z2"][s]).item() for s in (slice(0, 4), slice(4, 8))) / 2
    assert abs(local - sum(o["ntxent"] for o in outs) / WORLD) > 1e-3


def test_sinkhorn_rows_equal_single_process_rows(results):
    inputs, outs = results
    full = sinkhorn(inputs["scores"])
    half = [N // WORLD] * WORLD
    for r, o in enumerate(outs):
        torch.testing.assert_close(o["sinkhorn"], full[_rows(r, half)])
        torch.testing.assert_close(o["sinkhorn_unequal"], full[_rows(r, UNEQUAL)])
    # ... while a per-rank Sinkhorn would not equalise over the global batch.
    assert not torch.allclose(sinkhorn(inputs["scores"][:4]), full[:4])


def test_swav_equals_single_process_loss_and_gradient(results):
    inputs, outs = results
    loss, (g1, g2) = _grads(lambda a, b: swav_loss([a, b], {0: sinkhorn(a), 1: sinkhorn(b)}),
                            inputs["scores"], inputs["scores2"])
    assert sum(o["swav"] for o in outs) / WORLD == pytest.approx(loss, rel=1e-12)
    half = [N // WORLD] * WORLD
    for r, o in enumerate(outs):
        # No gather in the loss itself: each rank's gradient is W x its slice of the mean's.
        torch.testing.assert_close(o["swav_g1"], WORLD * g1[_rows(r, half)])
        torch.testing.assert_close(o["swav_g2"], WORLD * g2[_rows(r, half)])


def test_byol_is_unaffected_by_the_group(results):
    inputs, outs = results
    half = [N // WORLD] * WORLD
    for r, o in enumerate(outs):
        mine = _rows(r, half)
        loss, (g,) = _grads(lambda p, m=mine: byol_loss(p, inputs["z1"][m][:, :4]), inputs["p"][mine])
        assert o["byol"] == pytest.approx(loss, rel=1e-12)
        torch.testing.assert_close(o["byol_g"], g)
    full = byol_loss(inputs["p"], inputs["z1"][:, :4]).item()
    assert sum(o["byol"] for o in outs) / WORLD == pytest.approx(full, rel=1e-12)


def test_cpc_batch_negatives_gathered_equal_single_process(results):
    inputs, outs = results
    loss, (gp, gz) = _grads(lambda p, z: cpc_infonce(p, z, negatives="batch"),
                            inputs["cpc_p"], inputs["cpc_z"])
    assert sum(o["cpc"] for o in outs) / WORLD == pytest.approx(loss, rel=1e-12)
    half = [N // WORLD] * WORLD
    for r, o in enumerate(outs):
        torch.testing.assert_close(o["cpc_gp"], WORLD * gp[_rows(r, half)])
        torch.testing.assert_close(o["cpc_gz"], WORLD * gz[_rows(r, half)])
