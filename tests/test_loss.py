"""modelsat/loss.py: the stage-0 fit of the evidence offset learns the evidence value that tells right from wrong
within an instruction, leaves the rest of the encoder alone, skips missing results, and refuses bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from modelsat.encoder import EvidenceEncoder
from modelsat.loss import fit_offset

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
