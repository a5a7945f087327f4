"""Pictures of features and predictions: 2-D maps (PCA, t-SNE, UMAP) of a feature
file with a coordinate cache (``embed``, ``maps``), the diagnostics of
out-of-fold predictions (``plots``: confusion matrix, ROC and precision-recall
curves, reliability diagram, shifts, training history), saliency sheets
(``saliency``) and the near-duplicate contact sheet (``sheets``)::

    from skinfeat.viz.maps import feature_map
    from skinfeat.viz.plots import plot_confusion, save_figure
    feature_map("features/x.h5", method="umap", color="class", out="umap.png")
    save_figure(plot_confusion(y_true, proba), "confusion.png")

Imports of matplotlib, scikit-learn and umap happen on first use.
"""
