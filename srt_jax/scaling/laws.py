"""Scaling-law forms and the compute-optimal algebra of the Chinchilla law.

Units: N in parameters, D in trained target tokens, C in training FLOPs, losses in nats
per token. ``k`` is the FLOPs per parameter-token (C = k N D; 6 for a plain transformer,
derived from the data for our own runs).

- Chinchilla: L(N, D) = E + A / N^alpha + B / D^beta.
- Compute-optimal frontier under C = k N D: N*(C) = G (C/k)^a, D*(C) = (C/k)^b / G with
  G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta), b = alpha/(alpha+beta);
  along it L*(C) = E + A N*^-alpha + B D*^-beta, a power law in C with exponent
  alpha beta / (alpha + beta).
- Compute law on the frontier: L(C) = E + A C^-gamma.
- Kaplan: L(N, D) = ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D.
- Ranking metric against compute (log-linear, as HSTU reports): m(C) = a + b ln C.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (E, A, B > 0; alpha, beta > 0)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @classmethod
    def from_theta(cls, theta: np.ndarray) -> ChinchillaLaw:
        """From log-parameters (e, a, b, alpha, beta)."""
        e, a, b, alpha, beta = (float(v) for v in theta)
        return cls(
            E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta
        )

    @property
    def theta(self) -> np.ndarray:
        """Log-parameters (e, a, b, alpha, beta), shape [5]."""
        return np.array([np.log(self.E), np.log(self.A), np.log(self.B), self.alpha, self.beta])

    def loss(self, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        """Predicted loss (nats/token) at N parameters and D tokens."""
        n, d = np.asarray(n, float), np.asarray(d, float)
        return self.E + self.A * n**-self.alpha + self.B * d**-self.beta

    @property
    def a(self) -> float:
        """Exponent of N*(C): beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D*(C): alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """Allocation constant G = (alpha A / (beta B))^(1 / (alpha + beta))."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal_params(self, compute: np.ndarray | float, k: float) -> np.ndarray:
        """N*(C) = G (C/k)^a: loss-minimising parameters at C FLOPs."""
        return self.G * (np.asarray(compute, float) / k) ** self.a

    def optimal_tokens(self, compute: np.ndarray | float, k: float) -> np.ndarray:
        """D*(C) = (C/k)^b / G: loss-minimising tokens at C FLOPs."""
        return (np.asarray(compute, float) / k) ** self.b / self.G

    def frontier_loss(self, compute: np.ndarray | float, k: float) -> np.ndarray:
        """L*(C) = L(N*(C), D*(C)): the best loss reachable with C FLOPs."""
        return self.loss(self.optimal_params(compute, k), self.optimal_tokens(compute, k))

    def as_dict(self) -> dict[str, float]:
        """Parameters and the derived a, b, G as plain floats."""
        return {**asdict(self), "a": self.a, "b": self.b, "G": self.G}


def compute_law_loss(compute: np.ndarray, E: float, A: float, gamma: float) -> np.ndarray:
    """L(C) = E + A C^-gamma (C in FLOPs)."""
    return E + A * np.asarray(compute, float) ** -gamma


def kaplan_loss(
    n: np.ndarray, d: np.ndarray, n_c: float, d_c: float, alpha_n: float, alpha_d: float
) -> np.ndarray:
    """Kaplan et al. 2020: L(N, D) = ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D."""
    n, d = np.asarray(n, float), np.asarray(d, float)
    return ((n_c / n) ** (alpha_n / alpha_d) + d_c / d) ** alpha_d


def log_linear_metric(compute: np.ndarray, a: float, b: float) -> np.ndarray:
    """Ranking metric against compute: m(C) = a + b ln C."""
    return a + b * np.log(np.asarray(compute, float))


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x^exponent, fitted by least squares in log-log space."""

    coefficient: float
    exponent: float
    n_points: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> PowerLaw:
        """Ordinary least squares of log y on log x (x, y > 0, at least 2 distinct x)."""
        log_x, log_y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
        exponent, intercept = np.polyfit(log_x, log_y, 1)
        return cls(float(np.exp(intercept)), float(exponent), int(log_x.size))

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return self.coefficient * np.asarray(x, float) ** self.exponent
