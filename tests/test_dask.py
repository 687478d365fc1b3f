"""Cross-validation beyond one process: joblib's dask backend gives loky's results."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_ltr import LowTensorRankRNN
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")


def _search():
    est = LowTensorRankRNN(n_units=12, max_iter=30, infer_max_iter=30, random_state=0)
    return GridSearchCV(est, {"rank": [1, 2]}, n_jobs=2, error_score="raise",
                        cv=KFold(2, shuffle=True, random_state=0))


@pytest.mark.slow  # starts a two-process cluster: 10-25 s
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_on_dask_cluster_matches_loky():
    X = make_low_tensor_rank_rnn(n_trials=16, n_timepoints=8, n_neurons=6, rank=2,
                                 n_units=12, random_state=0).X
    loky = _search().fit(X)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream, \
                joblib.parallel_backend("dask"):
            dask = _search().fit(X)
        # The fits really ran on the cluster's worker processes.
        assert len(stream.data) > 0
        assert {t["worker"] for t in stream.data} <= set(client.scheduler_info()[
            "workers"])

    assert [p["rank"] for p in dask.cv_results_["params"]] == [1, 2]
    assert np.all(np.isfinite(dask.cv_results_["mean_test_score"]))
    np.testing.assert_allclose(dask.cv_results_["mean_test_score"],
                               loky.cv_results_["mean_test_score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(dask.cv_results_["split0_test_score"],
                               loky.cv_results_["split0_test_score"], rtol=0,
                               atol=1e-12)
    assert dask.best_params_ == loky.best_params_
    # The refitted model (fitted in this process either way) is the same too.
    np.testing.assert_array_equal(dask.best_estimator_.left_factors_,
                                  loky.best_estimator_.left_factors_)

