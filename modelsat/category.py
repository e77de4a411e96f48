"""A guess of the instruction's category, for the evidence's `category` value: each candidate's accuracy per
category, weighted by the guess (`modelsat/evidence.py`).

    classifier = CategoryClassifier.fit_if_possible(train_embeddings, train_categories, aptitude_categories)
    category = classifier.proba(instruction_embeddings) @ accuracy_per_category                 # (Q,)

Data whose questions carry one category or none has no classifier (`fit_if_possible` returns None): the evidence's
category value is then the candidate's overall accuracy.

The classifier is a logistic regression (scikit-learn) over unit sentence embeddings, fitted by `train.py` on the
train split's questions and their dataset categories (no model results). It is stored in the checkpoint as
`category_classifier.safetensors` with the aptitude questions' categories, so the value is built from aptitude
results alone and a model added through the zoo gets it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression


@dataclass
class CategoryClassifier:
    classes: list[str]
    weight: torch.Tensor          # (C, D) logits = embeddings @ weight.T + bias
    bias: torch.Tensor            # (C,)
    aptitude_category: torch.Tensor
    """(A,) each aptitude question's category as a position in `classes`, in `aptitude.question_ids` order; -1
    for a category the classifier never saw."""

    @classmethod
    def fit(cls, embeddings: torch.Tensor | np.ndarray, categories: Sequence[str],
            aptitude_categories: Sequence[str]) -> "CategoryClassifier":
        """Fit on (N, D) embeddings of questions and their `categories`; `aptitude_categories` are the aptitude
        questions' own, in `aptitude.question_ids` order."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(categories):
            raise ValueError(f"{len(categories)} categories for embeddings of shape {x.shape}")
        if len(set(categories)) < 2:
            raise ValueError(f"a category classifier needs at least two categories, got {sorted(set(categories))}")
        lr = LogisticRegression(max_iter=2000).fit(x, list(categories))          # lbfgs: deterministic
        coef, intercept = lr.coef_, lr.intercept_
        if len(lr.classes_) == 2:     # scikit-learn keeps one logit for two classes: softmax([0, z]) = sigmoid(z)
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        classes = [str(c) for c in lr.classes_]
        position = {c: i for i, c in enumerate(classes)}
        return cls(classes, torch.tensor(coef, dtype=torch.float32), torch.tensor(intercept, dtype=torch.float32),
                   torch.tensor([position.get(c, -1) for c in aptitude_categories], dtype=torch.long))

    @classmethod
    def fit_if_possible(cls, embeddings: torch.Tensor | np.ndarray, categories: Sequence[str],
                        aptitude_categories: Sequence[str]) -> "CategoryClassifier | None":
        """`fit`, or None where the questions carry fewer than two distinct categories (blank ones ignored as
        such: a table without categories has one)."""
        if len({str(c) for c in categories}) < 2:
            return None
        return cls.fit(embeddings, categories, aptitude_categories)

    def proba(self, embeddings: torch.Tensor) -> np.ndarray:
        """(Q, C) the probability of each category for (Q, D) unit embeddings of instructions."""
        logits = torch.as_tensor(embeddings).float() @ self.weight.T + self.bias
        return torch.softmax(logits.double(), dim=-1).numpy()

    def per_category(self, outcomes: np.ndarray) -> np.ndarray:
        """(C, M) each model's mean aptitude score per category from (A, M) `outcomes`; a category the aptitude
        test lacks gets the model's mean over the whole test."""
        cat = self.aptitude_category.numpy()
        whole = outcomes.mean(axis=0)
        return np.stack([outcomes[cat == c].mean(axis=0) if (cat == c).any() else whole
                         for c in range(len(self.classes))])
