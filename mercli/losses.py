"""Loss terms of paper eq. 23: L = L_T + l1 L_IN + l2 L_S + l3 L_H + l4 L_RE + l5 L_MI.

Each term is a plain function of tensors so it can be checked against its formula; ``total_loss``
combines them with the weights of a :class:`~mercli.config.LossWeights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from mercli.config import LossWeights
from mercli.model.emotion import EmotionModel, ModelOutput
from mercli.model.mic import MutualInformationEstimators


def task_loss(prediction: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """L_T: MSE on scores (B,), or cross-entropy on logits (B, C) against class ids (B,)."""
    if task == "regression":
        return F.mse_loss(prediction, labels.float())
    return F.cross_entropy(prediction, labels.long())


def cmd(x: torch.Tensor, y: torch.Tensor, n_moments: int = 5, span: float = 1.0) -> torch.Tensor:
    """Central moment discrepancy (Zellinger et al. 2017; paper eq. 12), x: (B, D), y: (B', D).

    ||E x - E y|| / span + sum_{k=2..K} ||C_k(x) - C_k(y)|| / span^k, with C_k the k-th central
    moment per channel. ``span`` is |b - a|, the width of the features' interval.
    """
    mean_x, mean_y = x.mean(0), y.mean(0)
    total = (mean_x - mean_y).norm() / span
    centred_x, centred_y = x - mean_x, y - mean_y
    for k in range(2, n_moments + 1):
        moment_x, moment_y = centred_x.pow(k).mean(0), centred_y.pow(k).mean(0)
        total = total + (moment_x - moment_y).norm() / span**k
    return total


def gaussian_gram(x: torch.Tensor) -> torch.Tensor:
    """exp(-||x_i - x_j||^2 / (2 sigma^2)) with sigma^2 the median squared distance, (B, B)."""
    sq = torch.cdist(x, x).pow(2)
    off_diagonal = sq[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    sigma2 = (
        off_diagonal.detach().median().clamp(min=1e-6)
        if off_diagonal.numel()
        else sq.new_tensor(1.0)
    )
    return torch.exp(-sq / (2 * sigma2))


def hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased HSIC (paper eq. 14): (B-1)^-2 Tr(H K H L), Gaussian kernels; x, y: (B, D)."""
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    h = torch.eye(n, device=x.device, dtype=x.dtype) - 1.0 / n
    gram_x, gram_y = gaussian_gram(x), gaussian_gram(y)
    return torch.trace(h @ gram_x @ h @ gram_y) / (n - 1) ** 2


def info_nce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE (paper eq. 16) from the (B, B) matrix s(x_i, y_j); positives on the diagonal."""
    return F.cross_entropy(scores, torch.arange(len(scores), device=scores.device))


def invertibility_loss(output: ModelOutput) -> torch.Tensor:
    """L_IN (eq. 11): ||F^-1([u; r]) - [u~; r~]||^2, mean over elements and modalities."""
    terms = [
        F.mse_loss(f.restored, f.latent) for f in output.features.values() if f.restored is not None
    ]
    return torch.stack(terms).mean() if terms else output.prediction.new_zeros(())


def reconstruction_loss(output: ModelOutput) -> torch.Tensor:
    """L_RE (eq. 10): each modality's pooled encoder output rebuilt from its [u; r]."""
    terms = [F.mse_loss(output.reconstructed[m], x) for m, x in output.pooled.items()]
    return torch.stack(terms).mean()


def similarity_loss(shared: dict[str, torch.Tensor], n_moments: int = 5) -> torch.Tensor:
    """L_S (eq. 13): CMD between the shared features of each modality pair, averaged."""
    terms = [cmd(shared[a], shared[b], n_moments) for a, b in combinations(shared, 2)]
    return torch.stack(terms).mean() if terms else _zero(shared)


def independence_loss(
    shared: dict[str, torch.Tensor], specific: dict[str, torch.Tensor]
) -> torch.Tensor:
    """L_H (eq. 15): HSIC between specific features of modality pairs, plus HSIC(r_m, u_m)."""
    pairs = [hsic(specific[a], specific[b]) for a, b in combinations(specific, 2)]
    within = [hsic(shared[m], specific[m]) for m in shared]
    return (torch.stack(pairs).mean() if pairs else _zero(shared)) + torch.stack(within).mean()


def relevance_loss(
    mic: MutualInformationEstimators, shared: dict[str, torch.Tensor], z: torch.Tensor
) -> torch.Tensor:
    """L_R (eq. 16): InfoNCE between shared features of modality pairs and each r_m with z."""
    pairs = [(shared[a], shared[b]) for a, b in combinations(shared, 2)]
    pairs += [(r, z) for r in shared.values()]
    return torch.stack([info_nce(mic.scores(x, y)) for x, y in pairs]).sum()


def nearest_neighbours(r: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest other samples of each row of r: (B, D) -> (B, k)."""
    distances = torch.cdist(r, r)
    distances.fill_diagonal_(float("inf"))
    return distances.topk(min(k, len(r) - 1), largest=False).indices


def conditional_mi(
    phi: nn.Module, u: torch.Tensor, z: torch.Tensor, r: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The estimate of I(u; z | r) (eq. 18) and the discriminator's own loss.

    Joint samples are (u_i, z_i, r_i); the conditional-product samples replace z_i by the label
    embedding of one of the k nearest neighbours of r_i in the batch. log(phi / (1 - phi)) is the
    discriminator's logit. The encoders minimise the estimate with phi held fixed; phi learns to
    tell the two kinds apart from detached inputs (binary cross-entropy).

    Returns:
        (estimate, discriminator_loss), both scalars.
    """
    neighbours = nearest_neighbours(r.detach(), k)  # (B, k)
    n_neg = neighbours.shape[1]
    joint = torch.cat([u, z, r], dim=-1)  # (B, 3 d)
    product = torch.cat(
        [u[:, None].expand(-1, n_neg, -1), z[neighbours], r[:, None].expand(-1, n_neg, -1)], dim=-1
    )  # (B, k, 3 d)
    frozen = {name: p.detach() for name, p in phi.named_parameters()}
    estimate = (
        functional_call(phi, frozen, (joint,)).mean()
        - functional_call(phi, frozen, (product,)).mean()
    )
    joint_logit, product_logit = phi(joint.detach()), phi(product.detach())
    discriminator_loss = F.binary_cross_entropy_with_logits(
        joint_logit, torch.ones_like(joint_logit)
    ) + F.binary_cross_entropy_with_logits(product_logit, torch.zeros_like(product_logit))
    return estimate, discriminator_loss


@dataclass
class LossTerms:
    """The value of each term; ``total`` is what the optimiser minimises."""

    total: torch.Tensor
    task: torch.Tensor
    invertibility: torch.Tensor
    similarity: torch.Tensor
    independence: torch.Tensor
    reconstruction: torch.Tensor
    relevance: torch.Tensor
    conditional: torch.Tensor
    discriminator: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def total_loss(
    model: EmotionModel, output: ModelOutput, labels: torch.Tensor, weights: LossWeights
) -> LossTerms:
    """L of eq. 23 plus the CMI discriminator's loss (which only reaches the discriminators)."""
    zero = output.prediction.new_zeros(())
    shared, specific = output.shared, output.specific
    terms = {
        "task": task_loss(output.prediction, labels, model.config.task),
        "invertibility": invertibility_loss(output) if weights.invertibility else zero,
        "similarity": similarity_loss(shared) if weights.similarity else zero,
        "independence": independence_loss(shared, specific) if weights.independence else zero,
        "reconstruction": reconstruction_loss(output) if weights.reconstruction else zero,
        "relevance": zero,
        "conditional": zero,
        "discriminator": zero,
    }
    if model.mic is not None and weights.mutual_information and len(labels) > 1:
        z = model.mic.embed_labels(labels)  # (B, d_half)
        terms["relevance"] = relevance_loss(model.mic, shared, z)
        cmi = [
            conditional_mi(
                model.mic.discriminators[m], specific[m], z.detach(), shared[m], model.config.knn_k
            )
            for m in shared
        ]
        terms["conditional"] = torch.stack([e for e, _ in cmi]).sum()
        terms["discriminator"] = torch.stack([d for _, d in cmi]).sum()
    total = (
        terms["task"]
        + weights.invertibility * terms["invertibility"]
        + weights.similarity * terms["similarity"]
        + weights.independence * terms["independence"]
        + weights.reconstruction * terms["reconstruction"]
        + weights.mutual_information * (terms["relevance"] + terms["conditional"])
        + terms["discriminator"]
    )
    return LossTerms(total=total, **terms)


def _zero(features: dict[str, torch.Tensor]) -> torch.Tensor:
    return next(iter(features.values())).new_zeros(())
