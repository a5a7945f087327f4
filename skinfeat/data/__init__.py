"""The dataset layer: manifests of the layouts users have (``layouts``, ``csvfile``,
``manifest``), checks (``check``), lesion-grouped splits (``split``: the folds
file) and the folds of a features file (``folds``), patient metadata
(``metadata``), near-duplicate search (``duplicates``) and ISIC submission files
(``submission``)::

    from skinfeat.data.layouts import load_dataset
    from skinfeat.data.split import make_folds, write_folds
    m = load_dataset(data="../shared/data/ham10000")
    write_folds("folds.csv", m, make_folds(m, k=5, seed=0))
"""
