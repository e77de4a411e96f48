"""modelsat/loss.py: the stage-0 fit of the evidence offset learns the evidence value that tells right from wrong
within an instruction, leaves the rest of the encoder alone, skips missing results, and refuses bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modelsat.encoder import EvidenceEncoder
from modelsat.loss import fit_offset, tier_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_offset_learns_the_informative_evidence_value_and_touches_only_the_offset() -> None:
    rng = np.random.default_rng(0)
    Q, M, E = 200, 5, 4
    values = torch.rand(Q, M, E)
    labels = (values[..., 2] > 0.5).numpy().astype(np.float64)        # value 2 decides who is right
    labels[rng.random((Q, M)) < 0.1] = np.nan                          # some pairs have no result
    enc = EvidenceEncoder(E, 8, offset="linear")
    token = {k: v.clone() for k, v in enc.token.state_dict().items()}
    for loss in ("listwise", "pairwise", "bce+listwise"):
        torch.nn.init.zeros_(enc.offset[0].weight)
        losses = fit_offset(enc, values, labels, loss, epochs=150, lr=0.05, progress=False)
        w = enc.offset[0].weight.detach()[0]
        assert losses[-1] < losses[0] and int(w.abs().argmax()) == 2 and w[2] > 0, (loss, w)
    assert all(torch.equal(v, enc.token.state_dict()[k]) for k, v in token.items())
    with pytest.raises(ValueError, match="unknown stage-0 loss 'hinge'"):
        fit_offset(enc, values, labels, "hinge", epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="must match"):
        fit_offset(enc, values[:10], labels, "listwise", epochs=1, lr=0.1)


def test_tier_groups_put_like_models_together_and_pad_the_short_tier() -> None:
    values = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)           # (Q=2, M=5, E=1)
    labels = np.array([[0.9, 0.1, 0.5, 0.7, 0.3], [1.0, 0.0, 0.5, 0.8, np.nan]])      # accuracy order: 0, 3, 2, 4, 1
    v, y = tier_groups(values, labels, 3)                                              # tiers (0, 3, 2) and (4, 1)
    assert v.shape == (4, 3, 1) and y.shape == (4, 3)
    assert v[:2, :, 0].tolist() == [[0, 3, 2], [5, 8, 7]] and v[2:, :2, 0].tolist() == [[4, 1], [9, 6]]
    assert np.isnan(y[2:, 2]).all() and (v[2:, 2] == 0).all()                          # the padding is left out
    np.testing.assert_array_equal(y[3, :2], [np.nan, 0.0])                             # a missing result stays missing
    same_v, same_y = tier_groups(values, labels, 5)                                    # one tier: unchanged
    assert same_v is values and np.array_equal(same_y, labels.astype(np.float32), equal_nan=True)
    no_tiers = tier_groups(values, labels, 0)                                          # 0: the config's "none"
    assert no_tiers[0] is values and np.array_equal(no_tiers[1], labels.astype(np.float32), equal_nan=True)
    with pytest.raises(ValueError, match="at least 2 models"):
        tier_groups(values, labels, 1)


def test_a_tiered_fit_learns_what_tells_like_models_apart() -> None:
    """Strong and weak models differ by their level; within a tier only value 1 tells who is right: the fit over
    tiers lowers its loss and weighs value 1."""
    rng = np.random.default_rng(1)
    Q, M = 400, 6
    level = np.array([0.9, 0.85, 0.8, 0.3, 0.25, 0.2])
    signal = rng.random((Q, M))
    labels = (rng.random((Q, M)) < np.clip(level + 0.3 * (signal - 0.5), 0, 1)).astype(np.float64)
    values = torch.from_numpy(np.stack([np.broadcast_to(level, (Q, M)), signal], axis=-1)).float()
    enc = EvidenceEncoder(2, 8, offset="linear")
    v, y = tier_groups(values, labels, 3)
    assert v.shape == (2 * Q, 3, 2)
    losses = fit_offset(enc, v, y, "listwise", epochs=300, lr=0.05, progress=False)
    assert losses[-1] < losses[0] and enc.offset[0].weight.detach()[0, 1] > 0.5
