"""The router's training loss over groups of candidates, and the stage-0 fit of the evidence offset that uses it.

    loss = group_loss(z, y, mask, weights, pointwise=1.0, listwise=1.0, pairwise=0.0)   # (G, K) padded groups
    losses = fit_offset(encoder.evidence, values, labels, "listwise", epochs=400, lr=0.01)

A group is one instruction's candidates (instruction-centred, this project) or one model's instructions
(model-centred, the paper's); train.py pads a batch of groups into (G, K) tensors.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# (pointwise, listwise, pairwise) weights of each stage-0 loss name (train.evidence_fit_loss)
STAGE0_LOSSES = {"listwise": (0.0, 1.0, 0.0), "pairwise": (0.0, 0.0, 1.0), "bce+listwise": (1.0, 1.0, 0.0)}


def group_loss(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, pointwise: float,
               listwise: float, pairwise: float) -> torch.Tensor:
    """The weighted sum over G groups of padded (G, K) logits `z` and labels `y` (`mask` marks the real entries):
    per group, `pointwise` × the mean BCE on p(Yes) + `listwise` × the cross-entropy of softmax(z) against the
    labels normalised to sum 1 (groups with some positive label and two or more candidates) + `pairwise` × the
    mean logistic loss softplus(z_wrong − z_right) over the group's (right, wrong) pairs (RankNet, Burges et al.
    2005; groups with both). Labels >= 0.5 count as right. Computed in fp32. Returns a scalar: Σ_g weights[g] ·
    loss_g."""
    z = z.float()                                   # fp32 whatever the autocast: labels such as 0.3 stay exact
    y = torch.where(mask, y.float(), torch.zeros_like(z))
    n = mask.sum(dim=1)
    per = z.new_zeros(z.shape[0])
    if pointwise:
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none").masked_fill(~mask, 0.0)
        per = per + pointwise * bce.sum(dim=1) / n.clamp_min(1)
    if listwise:
        total = y.sum(dim=1)
        logp = F.log_softmax(z.masked_fill(~mask, float("-inf")), dim=1).masked_fill(~mask, 0.0)
        ce = -(y / torch.where(total > 0, total, torch.ones_like(total))[:, None] * logp).sum(dim=1)
        per = per + listwise * torch.where((total > 0) & (n > 1), ce, torch.zeros_like(ce))
    if pairwise:
        right, wrong = (y >= 0.5) & mask, (y < 0.5) & mask
        pairs = (right[:, :, None] & wrong[:, None, :]).to(z.dtype)                # (G, K_right, K_wrong)
        count = pairs.sum(dim=(1, 2))
        soft = (F.softplus(z[:, None, :] - z[:, :, None]) * pairs).sum(dim=(1, 2))
        per = per + pairwise * torch.where(count > 0, soft / count.clamp_min(1), torch.zeros_like(soft))
    return (weights.to(per) * per).sum()


def tier_groups(values: torch.Tensor, labels: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Stage 0's groups over models of like strength: the M models sorted by their mean label (their accuracy over
    the Q instructions, NaN left out) and cut into ceil(M / size) tiers of neighbours in that order
    (`numpy.array_split`: sizes differ by at most one), each (instruction, tier) one group. (Q, M, E) evidence and
    (Q, M) labels → (Q · tiers, W, E) and (Q · tiers, W), W the largest tier, shorter tiers padded with zeros and NaN
    labels (left out by `fit_offset`). `size` 0 (train.evidence_fit_tier's "no tiers") or >= M gives back one group
    per instruction, the models in their own order. Raises ValueError on a size of 1 or below 0."""
    if size < 0 or size == 1:
        raise ValueError(f"a tier needs at least 2 models, got {size}")
    labels = np.asarray(labels, dtype=np.float32)
    if size == 0 or size >= labels.shape[1]:
        return values, labels
    order = np.argsort(-np.nanmean(labels, axis=0), kind="stable")
    tiers = np.array_split(order, math.ceil(len(order) / size))
    width = max(len(t) for t in tiers)
    v, y = [], []
    for t in tiers:
        pad = width - len(t)
        v.append(torch.cat([values[:, t], values.new_zeros(values.shape[0], pad, values.shape[2])], dim=1))
        y.append(np.concatenate([labels[:, t], np.full((labels.shape[0], pad), np.nan, np.float32)], axis=1))
    return torch.cat(v), np.concatenate(y)


def fit_offset(encoder: torch.nn.Module, values: torch.Tensor, labels: np.ndarray, loss: str, epochs: int,
               lr: float, progress: bool = True) -> list[float]:
    """Fit the logit offset of an `EvidenceEncoder` alone: full-batch Adam (`lr`) for `epochs` on (Q, M, E)
    evidence `values` against (Q, M) `labels` (NaN: no result, left out), one group per instruction, with the
    `STAGE0_LOSSES[loss]` terms of `group_loss` averaged over the instructions, on the encoder's device. Only
    `encoder.offset` changes; nothing is random (full batch, from the offset's current weights). Returns the loss
    before each step. Raises ValueError on an unknown loss name or shapes that do not fit."""
    if loss not in STAGE0_LOSSES:
        raise ValueError(f"unknown stage-0 loss {loss!r}; use one of {', '.join(STAGE0_LOSSES)}")
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if values.ndim != 3 or values.shape[:2] != y.shape:
        raise ValueError(f"evidence (Q, M, E) and labels (Q, M) must match, got {tuple(values.shape)} and "
                         f"{tuple(y.shape)}")
    device = next(encoder.offset.parameters()).device
    mask, y = (~torch.isnan(y)).to(device), torch.nan_to_num(y).to(device)
    optimizer = torch.optim.Adam(encoder.offset.parameters(), lr=lr)
    flat = values.reshape(-1, values.shape[-1]).float().to(device)
    ones, losses = torch.ones(y.shape[0], device=device), []
    for _ in tqdm(range(epochs), desc="stage 0: evidence offset", unit="epoch", leave=False, disable=not progress):
        z = encoder.logit_offset(flat).reshape(y.shape)                              # (Q, M)
        value = group_loss(z, y, mask, ones, *STAGE0_LOSSES[loss]) / y.shape[0]
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses
