"""A Bayesian reward head on frozen features, refitted after every label in milliseconds, and the criteria
that say which comparison is worth labelling next (bench/label_efficiency.py measures them).

The head is a logistic regression on feature differences, P(a preferred to b) = sigmoid(w . (f_a - f_b)), with
a Gaussian prior w ~ N(0, I / alpha), fitted by Newton's method; the Laplace approximation gives the posterior
covariance S. For a comparison x = f_a - f_b the predicted reward difference has mean w . x and variance x' S x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CRITERIA = ("variance", "fisher", "bald", "ucb-gap")
_BALD_C2 = math.pi * math.log(2) / 2  # Houlsby et al. 2011: sigmoid(z) ~ Phi(z / sqrt(C2)) in the entropy bound


@dataclass
class HeadConfig:
    """Knobs of the head; the defaults are the ones the bench measured."""

    # alpha; None: the mean squared norm of the comparisons weighed, so that a typical comparison's reward
    # difference has prior variance 1 whatever the features' scale (bench/label_efficiency.py: 1 overfits)
    prior_precision: float | None = None
    iterations: int = 25  # Newton steps at most (it converges in a handful)


class BayesianHead:
    """Posterior over the head's weights given labelled comparisons; features are standardised first."""

    def __init__(self, dim: int, config: HeadConfig | None = None, typical: torch.Tensor | None = None) -> None:
        """typical: comparisons [n, d] whose mean squared norm sets the prior when the config leaves it open."""
        self.config = config or HeadConfig()
        alpha = self.config.prior_precision
        if alpha is None:
            alpha = (
                float((typical.to(torch.float64) ** 2).sum(1).mean()) if typical is not None and len(typical) else 1.0
            )
        self.alpha = max(alpha, 1e-6)
        self.w = torch.zeros(dim, dtype=torch.float64)
        self.cov = torch.eye(dim, dtype=torch.float64) / self.alpha
        self.labels = 0

    def fit(self, x: torch.Tensor) -> "BayesianHead":
        """x: [n, d] differences oriented chosen - rejected (every row says "the first is preferred")."""
        x = x.to(torch.float64)
        alpha, eye = self.alpha, torch.eye(x.shape[1], dtype=torch.float64)
        w = torch.zeros(x.shape[1], dtype=torch.float64)  # from 0: Newton from an older optimum overshoots
        for _ in range(self.config.iterations if len(x) else 0):
            p = torch.sigmoid(x @ w)
            gradient = x.T @ (1 - p) - alpha * w
            hessian = (x.T * (p * (1 - p))) @ x + alpha * eye
            step = torch.linalg.solve(hessian, gradient)
            w = w + step
            if step.abs().max() < 1e-6:
                break
        p = torch.sigmoid(x @ w)
        self.w, self.cov, self.labels = w, torch.linalg.inv((x.T * (p * (1 - p))) @ x + alpha * eye), len(x)
        return self

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted reward difference of each comparison row."""
        return x.to(torch.float64) @ self.w

    def variance(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior variance of each comparison's reward difference: it shrinks as labels arrive."""
        x = x.to(torch.float64)
        return ((x @ self.cov) * x).sum(dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, d] draws of the weights from the posterior N(w, S) (Thompson sampling)."""
        z = torch.randn(n, len(self.w), generator=generator, dtype=torch.float64)
        return self.w + z @ torch.linalg.cholesky(self.cov).T

    def worth(self, x: torch.Tensor, criterion: str) -> torch.Tensor:
        """How much labelling each comparison teaches the head (higher first), by the stated criterion:
        variance  x' S x, the posterior variance of the reward difference;
        fisher    p (1 - p) x' S x, the expected information of the label under the head;
        bald      the label's mutual information with the weights (Houlsby et al. 2011): what the label tells
                  about the head, not how noisy it is, so a likely tie that is already understood is not asked;
        ucb-gap   |mean| + sd, DeltaUCB-style optimism, which favours large predicted differences."""
        variance = self.variance(x)
        if criterion == "variance":
            return variance
        if criterion == "fisher":
            p = torch.sigmoid(self.mean(x))
            return p * (1 - p) * variance
        if criterion == "bald":  # in probit units: sigmoid(z) ~ Phi(z sqrt(pi / 8))
            mean, var = self.mean(x) * math.sqrt(math.pi / 8), variance * math.pi / 8
            p = torch.special.ndtr(mean / torch.sqrt(1 + var))  # the predictive probability
            entropy = -(p * torch.log2(p.clamp_min(1e-12)) + (1 - p) * torch.log2((1 - p).clamp_min(1e-12)))
            spread = _BALD_C2 + var
            return entropy - torch.sqrt(_BALD_C2 / spread) * torch.exp(-(mean**2) / (2 * spread))
        if criterion == "ucb-gap":
            return self.mean(x).abs() + variance.sqrt()
        raise ValueError(f"unknown criterion {criterion!r}; one of {CRITERIA}")
