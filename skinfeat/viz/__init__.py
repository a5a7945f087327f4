"""Pictures of features and predictions: 2-D maps (PCA, t-SNE, UMAP) of a feature
file with a coordinate cache, and the diagnostics of out-of-fold predictions
(confusion matrix, ROC and precision-recall curves, reliability diagram).

    from skinfeat.viz import feature_map, plot_confusion, save_figure
    feature_map("features/x.h5", method="umap", color="class", out="umap.png")
    save_figure(plot_confusion(y_true, proba), "confusion.png")

Imports of matplotlib, scikit-learn and umap happen on first use.
"""

from skinfeat.metrics import expected_calibration_error
from skinfeat.viz.embed import METHODS, Embedding, embed, embedding_for, subsample_indices
from skinfeat.viz.maps import KNOWN_COLORS, MapResult, color_values, default_out, feature_map
from skinfeat.viz.plots import (CLASS_COLORS, calibration_bins, plot_confusion, plot_embedding, plot_reliability,
                                plot_roc_pr, plot_shifts, save_figure)

__all__ = [
    "CLASS_COLORS",
    "KNOWN_COLORS",
    "METHODS",
    "Embedding",
    "MapResult",
    "calibration_bins",
    "color_values",
    "default_out",
    "embed",
    "embedding_for",
    "expected_calibration_error",
    "feature_map",
    "plot_confusion",
    "plot_embedding",
    "plot_reliability",
    "plot_roc_pr",
    "plot_shifts",
    "save_figure",
    "subsample_indices",
]
