"""The 1-D ViT: attention against the textbook formula, positions against their formula, what the
context encoder sees of masked patches, ECG-JEPA's parameter counts, head-down parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.models import build_encoder, encoder_info
from ecg_ray.models.vit1d import Attention, ViT1d, sincos_positions


def tiny(**kwargs) -> ViT1d:
    torch.manual_seed(0)
    return ViT1d(12, **{"dim": 16, "depth": 2, "heads": 2, "patch_size": 5, **kwargs}).eval()


def test_attention_is_softmax_qk_v_per_head():
    torch.manual_seed(0)
    attention = Attention(dim=8, heads=2)
    x = torch.randn(3, 5, 8)
    q, k, v = attention.qkv(x).split(8, dim=-1)
    heads = []
    for h in range(2):
        qh, kh, vh = (t[..., 4 * h:4 * (h + 1)] for t in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(weights @ vh)
    expected = attention.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attention(x), expected)


def test_sincos_positions_follow_the_formula():
    table = sincos_positions(7, 6)
    for t in range(7):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert table[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_the_context_encoder_never_sees_the_patches_it_leaves_out():
    encoder = tiny()
    x = torch.randn(2, 12, 50)  # 10 patches of 5 samples
    keep = torch.tensor([[0, 1, 4, 7], [2, 3, 8, 9]])
    changed = x.clone()
    changed[0, :, 25:35] += 5.0  # patches 5 and 6 of row 0: not kept
    changed[1, :, 0:10] -= 3.0  # patches 0 and 1 of row 1: not kept
    with torch.no_grad():
        torch.testing.assert_close(encoder.tokens(changed, keep=keep), encoder.tokens(x, keep=keep))
        # ...while a kept patch's samples do reach it
        changed[0, :, 0:5] += 1.0
        assert not torch.allclose(encoder.tokens(changed, keep=keep)[0], encoder.tokens(x, keep=keep)[0])


def test_kept_tokens_come_back_in_keep_order_and_all_kept_is_the_full_sequence():
    encoder = tiny()
    x = torch.randn(2, 12, 50)
    with torch.no_grad():
        full = encoder.tokens(x)
        torch.testing.assert_close(encoder.tokens(x, keep=torch.arange(10).expand(2, -1)), full)
        ordered = encoder.tokens(x, keep=torch.tensor([[1, 3, 6]] * 2))
        shuffled = encoder.tokens(x, keep=torch.tensor([[6, 1, 3]] * 2))
    torch.testing.assert_close(shuffled, ordered[:, [2, 0, 1]])  # positions travel with their patches


def test_pooled_output_is_the_mean_patch_embedding_and_a_partial_patch_is_padded():
    encoder = tiny()
    x = torch.randn(3, 12, 53)  # 10 whole patches and 3 samples: ceil -> 11
    with torch.no_grad():
        tokens = encoder.tokens(x)
        assert tokens.shape == (3, 11, 16)
        torch.testing.assert_close(encoder(x), tokens.mean(dim=1))
        assert encoder.forward_features(x).shape == (3, 16, 11)
        padded = torch.nn.functional.pad(x, (0, 2))
        torch.testing.assert_close(encoder.tokens(padded), tokens)


@pytest.mark.parametrize(("name", "dim", "reference"), [("vit1d_xs", 192, 3_600_000), ("vit1d_s", 384, 14_277_888)])
def test_sizes_are_ecg_jepas_up_to_the_patch_length(name, dim, reference):
    """kweimann/ECG-JEPA configs/pretrain/ViTXS_all.yaml and ViTS_all.yaml state the encoders' parameter
    counts; theirs embeds 25-sample patches (500 Hz), ours 5-sample ones (100 Hz): 12 x 20 x dim fewer weights."""
    with torch.device("meta"):
        encoder = build_encoder(name)
    count = sum(p.numel() for p in encoder.parameters())
    assert count + 12 * (25 - 5) * dim == reference
    info = encoder_info(name)
    assert (info.output, info.feature_dim, info.downsample, info.finetune_head) == ("pooled", dim, 5, "linear")


def test_parameter_groups_run_from_the_head_down_and_cover_every_parameter_once():
    encoder = tiny(depth=3)
    groups = encoder.parameter_groups()
    assert len(groups) == 4  # the final norm with the last block, block 1, block 0, the patch embedding
    assert groups[0][0] is encoder.norm and groups[0][1] is encoder.blocks[2]
    assert groups[1] is encoder.blocks[1] and groups[2] is encoder.blocks[0] and groups[3] is encoder.patch_embedding
    ids = [id(p) for group in groups for p in group.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in encoder.parameters()}
