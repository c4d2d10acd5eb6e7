"""Evaluation of frozen representations: linear probe, weighted kNN, retrieval, plots.

``jaxcl.eval.evaluate`` runs them on an encoder and writes ``workdir/eval.json``.
"""
from jaxcl import _extras  # noqa: E402

_extras.require("train", __name__)

from jaxcl.eval.knn import knn_accuracy, knn_predict
from jaxcl.eval.probe import fit_logistic, linear_probe
from jaxcl.eval.retrieval import retrieval_recall
from jaxcl.eval.ranking import pearson, ranking_metrics, similarity_correlation, spearman

__all__ = ["knn_accuracy", "knn_predict", "fit_logistic", "linear_probe", "retrieval_recall"]
__all__ += ["ranking_metrics", "spearman", "pearson", "similarity_correlation"]
