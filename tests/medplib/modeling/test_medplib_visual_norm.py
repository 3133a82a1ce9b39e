"""Visual tokens and region features at the LLM's embedding scale (`output_rms`)."""

from __future__ import annotations

import pytest
import torch

from medplib.modeling.configuration import ProjectorConfig, RegionEncoderConfig
from medplib.modeling.presets import TINY_VISUAL_RMS, build_config
from medplib.modeling.projector import MultimodalProjector
from medplib.modeling.region_encoder import RegionEncoder, region_shape


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.float().square().mean(dim=-1).sqrt()


def test_projector_tokens_start_at_the_given_rms_whatever_the_input_scale():
    torch.manual_seed(0)
    plain = MultimodalProjector(ProjectorConfig("mlp2x_gelu", 8, 32))
    normed = MultimodalProjector(ProjectorConfig("mlp2x_gelu", 8, 32, output_rms=0.02))
    normed.net.load_state_dict(plain.net.state_dict())
    patches = 300.0 * torch.randn(2, 5, 8)  # (B, N, C_clip), CLIP-like large activations
    raw = plain(patches).detach()
    out = normed(patches).detach()  # (B, N, D)
    assert float(_rms(raw).min()) > 1.0  # the unnormalised tokens are far off the text scale
    torch.testing.assert_close(_rms(out), torch.full((2, 5), 0.02), atol=1e-5, rtol=1e-3)
    # Direction kept: the norm only rescales each token.
    cos = torch.nn.functional.cosine_similarity(raw, out, dim=-1)
    torch.testing.assert_close(cos, torch.ones(2, 5), atol=1e-4, rtol=0)
    # The gain is a parameter, so training can move the scale.
    assert normed.norm.weight.requires_grad and normed.norm.weight.shape == (32,)


def test_region_shape_is_added_after_the_norm_so_it_is_not_drowned():
    torch.manual_seed(0)
    patches = 500.0 * torch.randn(16, 8)  # (N, C_clip) on a 4 x 4 grid
    weights = torch.zeros(2, 16)
    weights[0, 5], weights[1, 5] = 0.1, 1.0  # a speck and the full cell: same pooled patch
    enc = RegionEncoder(RegionEncoderConfig(8, 12, shape_features=True, output_rms=0.02))
    pooled = enc(patches, weights).detach()  # zero-initialised shape embedding
    torch.testing.assert_close(_rms(pooled), torch.full((2,), 0.02), atol=1e-5, rtol=1e-3)
    torch.nn.init.constant_(enc.shape_embed.weight, 0.01)
    shaped = enc(patches, weights).detach()
    expected = pooled + enc.shape_embed(region_shape(weights)).detach()
    torch.testing.assert_close(shaped, expected)
    # A shape embedding of 1 % per input moves the speck's feature by a sizeable fraction of
    # its norm: it is no longer ~1/60 of it as with raw CLIP scales.
    change = (shaped[0] - shaped[1]).norm() / pooled[0].norm()
    assert float(change) > 0.05


def test_norms_are_in_the_tiny_presets_only_and_old_configs_load_without_them():
    tiny = build_config("tiny")
    assert tiny.projector.output_rms == tiny.region.output_rms == TINY_VISUAL_RMS
    official = build_config("medplib-7b-2e")
    assert official.projector.output_rms is None and official.region.output_rms is None
    proj = tiny.projector.to_dict()
    del proj["output_rms"]
    assert ProjectorConfig.from_dict(proj).output_rms is None
    assert MultimodalProjector(ProjectorConfig.from_dict(proj)).norm is None


@pytest.mark.parametrize("part", ["projector", "region"])
def test_a_non_positive_rms_is_refused(part):
    config = build_config("tiny")
    getattr(config, part).output_rms = 0.0
    with pytest.raises(ValueError, match=f"{part}.output_rms must be a positive number"):
        config.validate()
