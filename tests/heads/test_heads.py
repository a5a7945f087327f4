"""The heads: scikit-learn conformance, learning (separable data is learned,
random labels are not), imbalance handling, and saving fitted state."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils import estimator_checks as checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from devtools.synthetic import synthetic_feature_set
from skinfeat.core.errors import UsageError
from skinfeat.heads import HEADS, head_class, make_head
from skinfeat.heads.base import inner_split
from skinfeat.heads.knn import KNNHead
from skinfeat.heads.lgbm import LightGBMHead
from skinfeat.heads.logreg import LogRegHead
from skinfeat.heads.softmax import SoftmaxHead

SMALL = (60, 300, 40, 30, 60, 20, 20)  # HAM10000-like imbalance, 530 images
FAST = {"softmax": {"max_epochs": 30}, "logreg": {}, "lightgbm": {"n_estimators": 100}, "knn": {}}
EQUIVALENCE = "an inner validation split on the rows, and weights normalised to mean 1, " \
              "make repeated rows differ from weighted ones"

SUBSETS = "float32 similarities of a batch and of its rows alone differ in the last bits (BLAS blocking)"


def split(fs, test_share=0.3, seed=0):
    """A lesion-grouped train/test split of a FeatureSet."""
    lesions = np.unique(fs.lesion_ids)
    rng = np.random.default_rng(seed)
    test_lesions = set(rng.choice(lesions, int(len(lesions) * test_share), replace=False))
    test = np.array([lesion in test_lesions for lesion in fs.lesion_ids])
    return np.flatnonzero(~test), np.flatnonzero(test)


def fit_score(name, fs, **params):
    train, test = split(fs)
    head = make_head(name, **{**FAST[name], **params})
    head.fit(fs.features[train], fs.labels[train], groups=fs.lesion_ids[train])
    return head, balanced_accuracy_score(fs.labels[test], head.predict(fs.features[test]))


@parametrize_with_checks([LogRegHead(), LightGBMHead(n_estimators=30), KNNHead()],
                         expected_failed_checks=lambda est: {
                             "check_sample_weight_equivalence_on_dense_data": EQUIVALENCE,
                             **({"check_methods_subset_invariance": SUBSETS} if isinstance(est, KNNHead) else {})})
def test_sklearn_conformance(estimator, check):
    check(estimator)


@pytest.mark.parametrize("check", [
    checks.check_estimators_unfitted, checks.check_n_features_in, checks.check_fit_score_takes_y,
    checks.check_estimators_nan_inf, checks.check_dont_overwrite_parameters,
    checks.check_classifiers_one_label, checks.check_supervised_y_2d])
def test_softmax_sklearn_checks(check):
    """The slower TensorFlow head runs a selection of the same checks."""
    check("SoftmaxHead", SoftmaxHead(max_epochs=10))


@pytest.mark.parametrize("name", list(HEADS))
def test_clone_and_params_round_trip(name):
    head = make_head(name, class_weight="sqrt")
    twin = clone(head)
    assert twin.get_params() == head.get_params()
    assert twin.get_params()["class_weight"] == "sqrt"
    assert type(twin) is head_class(name)


@pytest.mark.parametrize("name", list(HEADS))
def test_separable_data_is_learned(name):
    fs = synthetic_feature_set(counts=SMALL, dim=32, separation=2.0, seed=1)
    _, bmca = fit_score(name, fs)
    assert bmca > 0.9


@pytest.mark.parametrize("name", list(HEADS))
def test_random_labels_are_not_learned(name):
    fs = synthetic_feature_set(counts=SMALL, dim=32, separation=2.0, random_labels=True, seed=2)
    _, bmca = fit_score(name, fs)
    assert bmca < 0.3  # chance is 1/7


def test_focal_loss_and_linear_softmax_learn():
    fs = synthetic_feature_set(counts=SMALL, dim=32, separation=2.0, seed=3)
    assert fit_score("softmax", fs, loss="focal")[1] > 0.9
    assert fit_score("softmax", fs, hidden=0, dropout=0.0, batch_size=32)[1] > 0.9


def test_softmax_stops_early_and_is_repeatable():
    fs = synthetic_feature_set(counts=SMALL, dim=32, separation=0.5, seed=4)
    a, _ = fit_score("softmax", fs, max_epochs=200, patience=3)
    b, _ = fit_score("softmax", fs, max_epochs=200, patience=3)
    assert a.n_epochs_ < 200
    np.testing.assert_allclose(a.predict_proba(fs.features[:20]), b.predict_proba(fs.features[:20]))


def test_logreg_tunes_regularisation_on_validation():
    fs = synthetic_feature_set(counts=SMALL, dim=32, separation=1.0, seed=5)
    head, _ = fit_score("logreg", fs)
    assert head.alpha_ in head.alphas
    fixed = fit_score("logreg", fs, alpha=0.1)[0]
    n_train = len(split(fs)[0])
    assert fixed.alpha_ == 0.1 and fixed.C_ == pytest.approx(1 / (0.1 * n_train))  # per-row strength


def test_knn_chooses_k_on_validation_and_the_predictor_computes_the_same(tmp_path):
    """The knn head: k chosen from ks on the inner lesion-grouped split and recorded;
    its neighbours are the cosine-nearest training rows; the saved state's numpy
    predictor (what predict and serve run) gives the head's probabilities."""
    from skinfeat.heads.inference import LOG_PROBA, normalised

    fs = synthetic_feature_set(counts=SMALL, dim=32, separation=1.0, seed=9)
    head, bmca = fit_score("knn", fs)
    assert head.k_ in head.ks and bmca > 0.5
    assert fit_score("knn", fs, k=3)[0].k_ == 3
    X = fs.features[:50]
    state = head.get_state()
    np.testing.assert_allclose(np.exp(LOG_PROBA["knn"](state, head.get_params(), tmp_path)(X)),
                               head.predict_proba(X), rtol=1e-5, atol=1e-7)
    # k=1 at a low temperature: every row's class is its nearest training row's
    one, _ = fit_score("knn", fs, k=1)
    Z = normalised(fs.features[:30], one.power, one.mean_, one.scale_)
    nearest = np.argmax(Z @ one.memory_.astype(np.float32).T, axis=1)
    np.testing.assert_array_equal(np.argmax(one.predict_proba(fs.features[:30]), axis=1),
                                  one.memory_labels_[nearest])


def test_unknown_head_suggests_close_names():
    with pytest.raises(UsageError, match=r"unknown head 'logref'; did you mean 'logreg'\?"):
        head_class("logref")
    with pytest.raises(UsageError, match="expected one of: softmax, logreg, lightgbm, knn"):
        head_class("svm")
    assert head_class("LGBM") is LightGBMHead


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(UsageError, match="head 'logreg' has no parameter hidden; its parameters are"):
        make_head("logreg", hidden=3)


def test_bad_choice_is_a_usage_error():
    fs = synthetic_feature_set(counts=SMALL, dim=8, seed=6)
    with pytest.raises(UsageError, match="logreg parameter class_weight: got 'square'; expected one of none, "
                                         "balanced, sqrt"):
        make_head("logreg", class_weight="square")
    with pytest.raises(UsageError, match="class_weight='square' is not one of none, balanced, sqrt"):
        LogRegHead(class_weight="square").fit(fs.features, fs.labels)


def test_inner_split_keeps_lesions_together_and_every_class():
    fs = synthetic_feature_set(counts=SMALL, dim=4, seed=7)
    train, val = inner_split(fs.labels.astype(int), fs.lesion_ids, 0.2, seed=0)
    assert not set(fs.lesion_ids[train]) & set(fs.lesion_ids[val])
    assert set(fs.labels[val]) == set(fs.labels[train]) == set(range(7))
    assert 0.15 < len(val) / len(fs) < 0.25
    assert inner_split(np.zeros(10, int), None, 0.2, 0) is None  # too small to split


@pytest.mark.parametrize("name", list(HEADS))
def test_state_round_trip_reproduces_predictions(name, tmp_path):
    fs = synthetic_feature_set(counts=SMALL, dim=16, separation=1.0, seed=8)
    head, _ = fit_score(name, fs, adjust="bmca")
    state = head.get_state()
    np.savez(tmp_path / "state.npz", **state)
    files = head.save_files(tmp_path)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as npz:
        loaded = head_class(name)(**head.get_params()).set_state(dict(npz))
    loaded.load_files(tmp_path)
    assert all((tmp_path / f).is_file() for f in files)
    np.testing.assert_allclose(loaded.predict_proba(fs.features), head.predict_proba(fs.features),
                               rtol=1e-5, atol=1e-6)
