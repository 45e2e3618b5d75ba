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
        return F.mse_loss(prediction, labels.to(prediction.dtype))
    return F.cross_entropy(prediction, labels.long())


def same_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: True where samples i and j carry the same label (the diagonal too)."""
    return labels[:, None] == labels[None, :]


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


def info_nce(scores: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE (paper eq. 16) from the (B, B) matrix s(x_i, y_j); positives on the diagonal.

    Args:
        exclude: (B, B) bool, True for pairs (i, j), j != i, that are not negatives of i (for
            the label embedding z: samples with the same label, whose z_j equals z_i); they
            are left out of i's denominator.
    """
    targets = torch.arange(len(scores), device=scores.device)
    if exclude is not None:
        off_diagonal = ~torch.eye(len(scores), dtype=torch.bool, device=scores.device)
        scores = scores.masked_fill(exclude & off_diagonal, float("-inf"))
    return F.cross_entropy(scores, targets)


def gate_correlation(gate: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared Pearson correlation between the gate gamma (B,) and the labels (B,) of a batch."""
    g = gate - gate.mean()
    y = labels.to(gate.dtype) - labels.to(gate.dtype).mean()
    return (g * y).sum().pow(2) / ((g * g).sum() * (y * y).sum()).clamp(min=1e-12)


Presence = dict[str, torch.Tensor]  # per modality (B,) bool: which samples have it


def _rows(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x if keep is None else x[keep]


class _Present:
    """Which samples of a batch have each modality (and each pair), counted once on the host.

    ``rows(...)`` is None when every sample qualifies (no indexing, the exact batch terms), else
    a (B,) bool selector; ``count(...)`` the number of qualifying samples.
    """

    def __init__(self, present: Presence | None, modalities: list[str], batch_size: int):
        self.batch_size = batch_size
        self.masks = dict(present or {})
        counts = {m: int(p.sum()) for m, p in self.masks.items() if m in modalities}
        self.all = {m: counts.get(m, batch_size) == batch_size for m in modalities}
        self.counts = {m: counts.get(m, batch_size) for m in modalities}

    def rows(self, *modalities: str) -> torch.Tensor | None:
        if all(self.all[m] for m in modalities):
            return None
        keep = self.masks[modalities[0]] if not self.all[modalities[0]] else None
        for m in modalities[1:]:
            if not self.all[m]:
                keep = self.masks[m] if keep is None else keep & self.masks[m]
        return keep

    def count(self, *modalities: str) -> int:
        if len(modalities) == 1:
            return self.counts[modalities[0]]
        keep = self.rows(*modalities)
        return self.batch_size if keep is None else int(keep.sum())


def invertibility_loss(output: ModelOutput) -> torch.Tensor:
    """L_IN (eq. 11): ||F^-1([u; r]) - [u~; r~]||^2, mean over elements and modalities present."""
    present = _Present(output.present, list(output.features), len(output.prediction))
    terms = [
        F.mse_loss(_rows(f.restored, present.rows(m)), _rows(f.latent, present.rows(m)))
        for m, f in output.features.items()
        if f.restored is not None and present.count(m)
    ]
    return torch.stack(terms).mean() if terms else output.prediction.new_zeros(())


def reconstruction_loss(output: ModelOutput) -> torch.Tensor:
    """L_RE (eq. 10): each present modality's pooled encoder output rebuilt from its [u; r]."""
    present = _Present(output.present, list(output.pooled), len(output.prediction))
    terms = [
        F.mse_loss(_rows(output.reconstructed[m], present.rows(m)), _rows(x, present.rows(m)))
        for m, x in output.pooled.items()
        if present.count(m)
    ]
    return torch.stack(terms).mean() if terms else output.prediction.new_zeros(())


def similarity_loss(
    shared: dict[str, torch.Tensor], n_moments: int = 5, present: Presence | None = None
) -> torch.Tensor:
    """L_S (eq. 13): CMD between the shared features of each modality pair, averaged; each
    pair over the samples that have both (pairs with fewer than 2 are left out)."""
    p = _Present(present, list(shared), len(next(iter(shared.values()))))
    terms = [
        cmd(_rows(shared[a], p.rows(a, b)), _rows(shared[b], p.rows(a, b)), n_moments)
        for a, b in combinations(shared, 2)
        if p.count(a, b) >= 2
    ]
    return torch.stack(terms).mean() if terms else _zero(shared)


def independence_loss(
    shared: dict[str, torch.Tensor],
    specific: dict[str, torch.Tensor],
    present: Presence | None = None,
) -> torch.Tensor:
    """L_H (eq. 15): HSIC between specific features of modality pairs, plus HSIC(r_m, u_m);
    each over the samples that have the modalities involved."""
    p = _Present(present, list(shared), len(next(iter(shared.values()))))
    pairs = [
        hsic(_rows(specific[a], p.rows(a, b)), _rows(specific[b], p.rows(a, b)))
        for a, b in combinations(specific, 2)
        if p.count(a, b) >= 2
    ]
    within = [
        hsic(_rows(shared[m], p.rows(m)), _rows(specific[m], p.rows(m)))
        for m in shared
        if p.count(m) >= 2
    ]
    total = _zero(shared)
    if pairs:
        total = total + torch.stack(pairs).mean()
    if within:
        total = total + torch.stack(within).mean()
    return total


def relevance_loss(
    mic: MutualInformationEstimators,
    shared: dict[str, torch.Tensor],
    z: torch.Tensor,
    present: Presence | None = None,
    same_label: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_R (eq. 16): InfoNCE between shared features of modality pairs and each r_m with z.

    ``same_label`` (B, B): pairs whose z are equal, which are not negatives of each other in
    the InfoNCE of r_m with z (see :func:`info_nce`). Each term runs over the samples that have
    its modalities.
    """
    p = _Present(present, list(shared), len(z))
    terms = []
    for a, b in combinations(shared, 2):
        if p.count(a, b) >= 2:
            keep = p.rows(a, b)
            terms.append(info_nce(mic.scores(_rows(shared[a], keep), _rows(shared[b], keep))))
    for m, r in shared.items():
        if p.count(m) >= 2:
            keep = p.rows(m)
            exclude = None
            if same_label is not None:
                exclude = same_label if keep is None else same_label[keep][:, keep]
            terms.append(info_nce(mic.scores(_rows(r, keep), _rows(z, keep)), exclude))
    return torch.stack(terms).sum() if terms else z.new_zeros(())


def nearest_neighbours(
    r: torch.Tensor, k: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices of the k nearest other samples of each row of r: (B, D) -> (B, k).

    ``exclude`` (B, B) bool: candidates to pass over (they come last, after every other one).
    """
    distances = torch.cdist(r, r)
    if exclude is not None:
        distances = distances.masked_fill(exclude, float("inf"))
    distances.fill_diagonal_(float("inf"))
    return distances.topk(min(k, len(r) - 1), largest=False).indices


def conditional_mi(
    phi: nn.Module,
    u: torch.Tensor,
    z: torch.Tensor,
    r: torch.Tensor,
    k: int,
    same_label: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The estimate of I(u; z | r) (eq. 18) and the discriminator's own loss.

    Joint samples are (u_i, z_i, r_i); the conditional-product samples replace z_i by the label
    embedding of one of the k nearest neighbours of r_i in the batch. log(phi / (1 - phi)) is the
    discriminator's logit. The encoders minimise the estimate with phi held fixed; phi learns to
    tell the two kinds apart from detached inputs (binary cross-entropy).

    ``same_label`` (B, B): a neighbour with i's own label would give z' = z_i, a product sample
    identical to the joint one; such neighbours are passed over, and where fewer than k others
    remain the missing negatives are left out.

    Returns:
        (estimate, discriminator_loss), both scalars.
    """
    neighbours = nearest_neighbours(r.detach(), k, same_label)  # (B, k)
    n_neg = neighbours.shape[1]
    joint = torch.cat([u, z, r], dim=-1)  # (B, 3 d)
    product = torch.cat(
        [u[:, None].expand(-1, n_neg, -1), z[neighbours], r[:, None].expand(-1, n_neg, -1)], dim=-1
    )  # (B, k, 3 d)
    frozen = {name: p.detach() for name, p in phi.named_parameters()}
    joint_logit, product_logit = phi(joint.detach()), phi(product.detach())
    if same_label is None:
        estimate = (
            functional_call(phi, frozen, (joint,)).mean()
            - functional_call(phi, frozen, (product,)).mean()
        )
        discriminator_loss = F.binary_cross_entropy_with_logits(
            joint_logit, torch.ones_like(joint_logit)
        ) + F.binary_cross_entropy_with_logits(product_logit, torch.zeros_like(product_logit))
        return estimate, discriminator_loss
    valid = (~same_label.gather(1, neighbours)).to(u.dtype)[..., None]  # (B, k, 1)
    n_valid = valid.sum()
    if not n_valid:
        return u.new_zeros(()), u.new_zeros(())
    estimate = (
        functional_call(phi, frozen, (joint,)).mean()
        - (functional_call(phi, frozen, (product,)) * valid).sum() / n_valid
    )
    negatives = F.binary_cross_entropy_with_logits(
        product_logit, torch.zeros_like(product_logit), weight=valid, reduction="sum"
    )
    discriminator_loss = (
        F.binary_cross_entropy_with_logits(joint_logit, torch.ones_like(joint_logit))
        + negatives / n_valid
    )
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
    branch: torch.Tensor  # task loss of g(s) plus that of g(p), each alone
    gate: torch.Tensor  # squared correlation of gamma with the label in the batch

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def total_loss(
    model: EmotionModel, output: ModelOutput, labels: torch.Tensor, weights: LossWeights
) -> LossTerms:
    """L of eq. 23 plus the CMI discriminator's loss (which only reaches the discriminators).

    Every term runs over the samples that have the modalities it involves (``output.present``);
    a sample with no modality at all is left out of the task loss too.
    """
    zero = output.prediction.new_zeros(())
    modalities = list(output.features)
    p = _Present(output.present, modalities, len(labels))
    scored = _any_present(output.present, modalities, p)
    shared, specific, present = output.shared, output.specific, output.present
    task = model.config.task

    def supervised(prediction: torch.Tensor | None) -> torch.Tensor:
        if prediction is None or (scored is not None and not scored.any()):
            return zero
        return task_loss(_rows(prediction, scored), _rows(labels, scored), task)

    terms = {
        "task": supervised(output.prediction),
        "invertibility": invertibility_loss(output) if weights.invertibility else zero,
        "similarity": similarity_loss(shared, present=present) if weights.similarity else zero,
        "independence": independence_loss(shared, specific, present)
        if weights.independence
        else zero,
        "reconstruction": reconstruction_loss(output) if weights.reconstruction else zero,
        "relevance": zero,
        "conditional": zero,
        "discriminator": zero,
        "branch": zero,
        "gate": zero,
    }
    if weights.branch and output.gate is not None:
        terms["branch"] = supervised(output.shared_branch) + supervised(output.specific_branch)
    if weights.gate_decorrelation and output.gate is not None and len(labels) > 2:
        terms["gate"] = gate_correlation(_rows(output.gate, scored), _rows(labels, scored))
    if model.mic is not None and weights.mutual_information and len(labels) > 1:
        z = model.mic.embed_labels(labels)  # (B, d_half)
        same = same_labels(labels)
        terms["relevance"] = relevance_loss(model.mic, shared, z, present, same)
        cmi = []
        for m in shared:
            if p.count(m) < 2:
                continue
            keep = p.rows(m)
            cmi.append(
                conditional_mi(
                    model.mic.discriminators[m],
                    _rows(specific[m], keep),
                    _rows(z.detach(), keep),
                    _rows(shared[m], keep),
                    model.config.knn_k,
                    same if keep is None else same[keep][:, keep],
                )
            )
        if cmi:
            terms["conditional"] = torch.stack([e for e, _ in cmi]).sum()
            terms["discriminator"] = torch.stack([d for _, d in cmi]).sum()
    total = (
        terms["task"]
        + weights.invertibility * terms["invertibility"]
        + weights.similarity * terms["similarity"]
        + weights.independence * terms["independence"]
        + weights.reconstruction * terms["reconstruction"]
        + weights.mutual_information * (terms["relevance"] + terms["conditional"])
        + weights.branch * terms["branch"]
        + weights.gate_decorrelation * terms["gate"]
        + terms["discriminator"]
    )
    return LossTerms(total=total, **terms)


def _any_present(present: Presence, modalities: list[str], p: _Present) -> torch.Tensor | None:
    """(B,) bool of the samples with at least one modality; None when that is all of them."""
    if any(p.all[m] for m in modalities):
        return None
    return torch.stack([present[m] for m in modalities]).any(dim=0)


def _zero(features: dict[str, torch.Tensor]) -> torch.Tensor:
    return next(iter(features.values())).new_zeros(())
