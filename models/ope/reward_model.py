"""The reward model q_hat(x, a) of DM, DR and Switch-DR: a ridge regression of the logged reward on
hashed features of (context, arm), with the influence of every logged reward on an estimate
through the fit (DM's interval)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import LinearOperator, cg
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import Ridge

from models.ope.data import BanditData


@dataclass
class RewardModel:
    """A scikit-learn ridge regression of the reward on hashed features of (context, arm): the arm's
    own features, the context's, and every context feature crossed with the arm's id, so that a
    table of per-segment arm means is within its reach."""

    alpha: float = 1.0
    n_features: int = 2 ** 18
    _X_all: object = field(default=None, repr=False)

    def design(self, data: BanditData):
        """The hashed (n * K, d) design matrix of every (decision, arm) pair, built once."""
        if self._X_all is not None and self._X_all.shape[0] == data.n * data.n_arms:
            return self._X_all
        arm_toks = data.arm_tokens or [[(f"arm{k}", 1.0)] for k in range(data.n_arms)]
        users = data.user_tokens or [[] for _ in range(data.n)]

        def pairs():
            for u in users:
                for k, at in enumerate(arm_toks):
                    yield at + [(f"x^{k}^{name}", value) for name, value in u] + [("bias", 1.0)]

        hasher = FeatureHasher(n_features=self.n_features, input_type="pair", alternate_sign=False)
        X = hasher.transform(pairs()).tocsr()
        X = X[:, np.unique(X.indices)]  # only the columns some pair uses: ridge solves stay small
        self._X_all = X.toarray() if X.shape[1] <= 2000 else X.tocsr()
        return self._X_all

    def fit_predict(self, data: BanditData, train: np.ndarray) -> np.ndarray:
        """Fit on the logged (decision, arm, reward) of the decisions `train` (indices, repeats
        allowed); predict q_hat (n, K) for every decision and arm."""
        X = self.design(data)
        rows = train * data.n_arms + data.action[train]
        dense = isinstance(X, np.ndarray)
        model = Ridge(alpha=self.alpha, solver="cholesky" if dense else "sparse_cg", fit_intercept=True)
        model.fit(X[rows], data.reward[train])
        return np.asarray(model.predict(X)).reshape(data.n, data.n_arms)

    def influence(self, data: BanditData, train: np.ndarray, G: np.ndarray) -> np.ndarray:
        """For the model fitted on the decisions `train` (distinct indices): h (len(train),), the
        derivative of sum_{i,a} G[i, a] q_hat(x_i, a) with respect to each training reward. A
        ridge fit is linear in the rewards, so that sum is sum_j h_j r_j + a constant, and its
        variance from the rewards' noise is sum_j h_j^2 Var(r_j).

        Ridge with an unpenalized intercept centres the design: with Xc = X_train - xbar,
        beta = (Xc'Xc + alpha I)^-1 Xc' r and q = (X - xbar) beta + mean(r), so
        h = Xc (Xc'Xc + alpha I)^-1 (X'G - sum(G) xbar) + sum(G) / m."""
        X = self.design(data)
        rows = train * data.n_arms + data.action[train]
        Xt = X[rows]
        m = len(train)
        total = float(np.sum(G))
        xbar = np.asarray(Xt.mean(axis=0)).ravel()
        u = np.asarray(X.T @ G.reshape(-1)).ravel() - total * xbar
        if isinstance(X, np.ndarray):
            Xc = Xt - xbar
            v = np.linalg.solve(Xc.T @ Xc + self.alpha * np.eye(X.shape[1]), u)
            return Xc @ v + total / m

        def matvec(z):
            z = np.ravel(z)
            return Xt.T @ (Xt @ z) - m * xbar * float(xbar @ z) + self.alpha * z

        op = LinearOperator((X.shape[1], X.shape[1]), matvec=matvec, dtype=float)
        v, info = cg(op, u, rtol=1e-8, maxiter=10 * X.shape[1])
        return np.asarray(Xt @ v).ravel() - float(xbar @ v) + total / m

    @staticmethod
    def folds(n: int, folds: int = 2, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, folds, size=n)

    def cross_fit(self, data: BanditData, folds: int = 2, seed: int = 0) -> np.ndarray:
        """q_hat where each decision's prediction comes from a model that never saw it."""
        fold = self.folds(data.n, folds, seed)
        q = np.zeros((data.n, data.n_arms))
        for f in range(folds):
            train = np.flatnonzero(fold != f)
            pred = self.fit_predict(data, train)
            q[fold == f] = pred[fold == f]
        return q
