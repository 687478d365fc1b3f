"""Write the legacy model files of tests/test_persistence_legacy.py (run once, with 0.1.0.dev0)."""
import warnings
import numpy as np
import sklearn_ltr
from sklearn_ltr import (LowTensorRankRNN, LowRankRNN, TCA, TrialPCA, StandardScaler3D,
                         SoftNormalizer, GaussianSmoother, TrialCropper)
from sklearn_ltr.datasets import make_low_tensor_rank_rnn
warnings.simplefilter("ignore")
d = make_low_tensor_rank_rnn(12, 8, 6, rank=2, random_state=0)
X, y = d.X, d.y
U = np.random.RandomState(1).randn(12, 8, 2)
Xnew, ynew, Unew = X[:3], y[:3], U[:3]
models = {
    "LowTensorRankRNN": (LowTensorRankRNN(rank=2, n_units=8, max_iter=20, infer_max_iter=10, random_state=0), dict(y=y, inputs=U)),
    "LowRankRNN": (LowRankRNN(rank=2, n_units=8, max_iter=20, infer_max_iter=10, random_state=0), {}),
    "TCA": (TCA(rank=2, max_iter=30, random_state=0), {}),
    "TrialPCA": (TrialPCA(rank=2), {}),
    "StandardScaler3D": (StandardScaler3D(), {}),
    "SoftNormalizer": (SoftNormalizer(), {}),
    "GaussianSmoother": (GaussianSmoother(sigma=1.0), {}),
    "TrialCropper": (TrialCropper(start=1, stop=6), {}),
}
for name, (est, kw) in models.items():
    if "y" in kw:
        est.fit(X, kw["y"], inputs=kw["inputs"])
        pred = est.predict(Xnew, ynew, inputs=Unew)
    else:
        est.fit(X)
        pred = est.predict(Xnew) if hasattr(est, "predict") else est.transform(Xnew)
    est.save(f"tests/data/v0.1/{name}.npz")
    np.save(f"tests/data/v0.1/{name}.expected.npy", pred)
np.savez("tests/data/v0.1/inputs.npz", X=Xnew, y=ynew, inputs=Unew)
print(sklearn_ltr.__version__)
