"""Low-tensor-rank recurrent network models of neural activity over learning.

scikit-learn estimators for ``(n_trials, n_timepoints, n_neurons)`` recordings,
implementing the method of Pellegrino, Cayco-Gajic & Chadwick (NeurIPS 2023).
"""

from ._persistence import load
from ._version import __version__
from .baselines import TCA, ConditionAverage, TrialPCA
from .preprocessing import (
    GaussianSmoother,
    SoftNormalizer,
    StandardScaler3D,
    TrialCropper,
    TrialFactors,
)
from .rnn import LowRankRNN, LowTensorRankRNN

__all__ = [
    "LowTensorRankRNN", "LowRankRNN", "TCA", "TrialPCA", "ConditionAverage",
    "StandardScaler3D", "GaussianSmoother", "SoftNormalizer", "TrialCropper",
    "TrialFactors",
    "load", "__version__",
]
