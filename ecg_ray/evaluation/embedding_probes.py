"""The cheap probes on frozen embeddings: weighted k-nearest neighbours and L2 logistic regression.

Both take per-record embeddings (one vector per record, its windows averaged) and multi-label
0/1 targets, and give per-record scores in [0, 1] for every label, as the linear probe's averaged
sigmoid outputs are, so that the same macro AUC scores them.

* :func:`knn_scores`: cosine similarity to every training record; a query's score for a label is
  the similarity-weighted mean of its k nearest training records' labels, with weights
  ``exp(cos / T)`` (the weighted k-NN of Wu et al. 2018, used by DINO, T = 0.07). One pass gives
  the scores of every k of a grid (cumulative sums over the neighbours sorted by similarity).
* :func:`fit_logreg`: one L2-regularised logistic regression per label, all labels at once as a
  (dim -> labels) linear map, fitted full batch by L-BFGS in torch (sklearn is not a dependency).
  The objective is sklearn's ``C * sum(log-loss) + ||w||^2 / 2`` divided by ``C n``, i.e. the mean
  log-loss + ``||w||^2 / (2 C n)``; biases are not penalised; features are standardised with the
  training mean and standard deviation first.

Memory: the training embeddings (dim x 4 bytes per record) and, for k-NN, one block of
``QUERY_BLOCK`` x training similarities at a time; logistic regression holds a standardised float32
copy of the training embeddings and its gradient (~2 x dim x 4 bytes per training record).
"""

from __future__ import annotations

import numpy as np
import torch

#: queries per block of the similarity matrix (1024 x 17k PTB-XL training records = 70 MB float32)
QUERY_BLOCK = 1024
DEFAULT_TEMPERATURE = 0.07


def _unit_rows(x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def knn_scores(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, ks: list[int],
               temperature: float = DEFAULT_TEMPERATURE) -> dict[int, np.ndarray]:
    """{k: (n_query, labels) float32 scores} of the similarity-weighted k-NN (k above the training size: all)."""
    train, labels = _unit_rows(train_x), torch.as_tensor(np.asarray(train_y, dtype=np.float32))
    query = _unit_rows(query_x)
    deepest = min(max(ks), len(train))
    out = {k: np.empty((len(query), labels.shape[1]), np.float32) for k in ks}
    for lo in range(0, len(query), QUERY_BLOCK):
        similarity = query[lo:lo + QUERY_BLOCK] @ train.T
        top, index = similarity.topk(deepest, dim=1)  # sorted, most similar first
        # exp((s - s_max) / T): the ratios of exp(s / T) without overflow
        weights = torch.exp((top - top[:, :1]) / temperature)
        weight_sums = weights.cumsum(1)
        label_sums = (weights[:, :, None] * labels[index]).cumsum(1)
        for k in ks:
            j = min(k, deepest) - 1
            out[k][lo:lo + len(top)] = (label_sums[:, j] / weight_sums[:, j, None]).numpy()
    return out


def standardise(train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the training features; a constant feature keeps std 1."""
    mean = train_x.mean(0, dtype=np.float64)
    std = train_x.std(0, dtype=np.float64)
    return mean.astype(np.float32), np.where(std > 1e-12, std, 1.0).astype(np.float32)


def _logreg_objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      c: float) -> torch.Tensor:
    logits = x @ weight + bias
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(0).sum()
    return loss + (weight * weight).sum() / (2.0 * c * len(x))


def fit_logreg(train_x: np.ndarray, train_y: np.ndarray, c: float, max_iter: int = 200,
               dtype=torch.float32) -> dict[str, np.ndarray]:
    """Per-label L2 logistic regression; returns ``mean``, ``std`` (standardisation), ``weight`` (dim, L), ``bias``."""
    mean, std = standardise(np.asarray(train_x, dtype=np.float32))
    x = torch.as_tensor((np.asarray(train_x, dtype=np.float32) - mean) / std, dtype=dtype)
    y = torch.as_tensor(np.asarray(train_y), dtype=dtype)
    prior = y.mean(0).clamp(1e-4, 1 - 1e-4)
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=dtype, requires_grad=True)
    bias = torch.log(prior / (1 - prior)).detach().clone().requires_grad_(True)  # start at the label prior
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _logreg_objective(x, y, weight, bias, c)
        loss.backward()
        return loss

    optimizer.step(closure)
    return {"mean": mean, "std": std, "weight": weight.detach().numpy(), "bias": bias.detach().numpy()}


def logreg_scores(model: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(n, labels) float32 probabilities of a :func:`fit_logreg` model."""
    z = (np.asarray(x, dtype=np.float32) - model["mean"]) / model["std"]
    logits = torch.as_tensor(z) @ torch.as_tensor(model["weight"]).float() + torch.as_tensor(model["bias"]).float()
    return torch.sigmoid(logits).numpy().astype(np.float32)


def logreg_gradient_norm(model: dict[str, np.ndarray], train_x: np.ndarray, train_y: np.ndarray, c: float) -> float:
    """Largest absolute gradient of the objective at ``model`` (0 at the optimum): a check of the fit."""
    z = torch.as_tensor((np.asarray(train_x, dtype=np.float32) - model["mean"]) / model["std"], dtype=torch.float64)
    weight = torch.as_tensor(model["weight"], dtype=torch.float64).requires_grad_(True)
    bias = torch.as_tensor(model["bias"], dtype=torch.float64).requires_grad_(True)
    _logreg_objective(z, torch.as_tensor(np.asarray(train_y), dtype=torch.float64), weight, bias, c).backward()
    return float(max(weight.grad.abs().max(), bias.grad.abs().max()))
