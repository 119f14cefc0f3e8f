"""The drift and outcome measures, checked against hand calculations from the literature and libraries.

PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over bins of fractions (Yurdakul, "Statistical Properties of
Population Stability Index", Western Michigan University dissertation, 2018, eq. 2.1; Siddiqi, "Credit
Risk Scorecards", 2006). It equals the symmetrised Kullback-Leibler divergence KL(a||e) + KL(e||a)
(Jeffreys divergence), which scipy computes independently. Without drift, for B bins and samples of
n and m, E[PSI] ~ (B - 1) (1/n + 1/m) (Yurdakul 2018, ch. 3): 10 bins, n = m = 1000 -> 0.018.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import f1_score, roc_auc_score

from jupyter_mlship.monitor.report import UnscorableOutcomes, macro_f1, outcome_metrics, roc_auc
from jupyter_mlship.runtime import runtime_module

monitoring = runtime_module("monitoring")


def test_psi_matches_a_hand_calculation():
    expected = [0.10, 0.20, 0.30, 0.40]
    actual = [0.15, 0.25, 0.25, 0.35]
    # by hand, bin by bin: (a - e) * ln(a / e)
    #   0.05 * ln(1.5)     = 0.05 * 0.405465 = 0.020273
    #   0.05 * ln(1.25)    = 0.05 * 0.223144 = 0.011157
    #  -0.05 * ln(0.8333)  = 0.05 * 0.182322 = 0.009116
    #  -0.05 * ln(0.875)   = 0.05 * 0.133531 = 0.006677
    assert monitoring.psi(expected, actual) == pytest.approx(0.047223, abs=1e-6)


def test_psi_is_the_jeffreys_divergence_scipy_computes():
    rng = np.random.default_rng(1)
    for _ in range(20):
        e, a = rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10))
        jeffreys = scipy.stats.entropy(a, e) + scipy.stats.entropy(e, a)
        assert monitoring.psi(e, a) == pytest.approx(jeffreys, rel=1e-9)


def test_an_empty_bin_counts_as_1e_4_so_psi_stays_finite():
    value = monitoring.psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1])
    assert math.isfinite(value)
    assert value == pytest.approx(-0.1 * math.log(0.8) + (0.1 - 1e-4) * math.log(0.1 / 1e-4))


def test_no_drift_psi_on_reference_deciles_is_near_yurdakuls_expectation():
    rng = np.random.default_rng(2)
    reference = monitoring.profile_values("numeric", rng.normal(size=1000).tolist())
    assert len(reference["edges"]) == 9 and reference["fractions"] == pytest.approx([0.1] * 10)
    values = [monitoring.drift(reference, rng.normal(size=1000).tolist())["psi"] for _ in range(200)]
    assert np.mean(values) == pytest.approx(9 * (1 / 1000 + 1 / 1000), rel=0.25)


def test_chi_square_matches_scipy():
    reference, current = [300, 500, 200, 10], [20, 50, 40, 5]
    statistic, dof, p = monitoring.chi_square(reference, current)
    table = np.array([reference, current])  # every category holds counts here: scipy takes the table as is
    scipy_stat, scipy_p, scipy_dof, _ = scipy.stats.chi2_contingency(table, correction=False)
    assert (statistic, dof) == (pytest.approx(scipy_stat), scipy_dof)
    assert p == pytest.approx(scipy_p, rel=1e-9)
    # A category that neither side has is left out, as scipy would refuse a zero expected count.
    assert monitoring.chi_square([300, 0, 500], [20, 0, 50])[:2] == monitoring.chi_square([300, 500], [20, 50])[:2]


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 10, 25])
@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 3.84, 10.0, 40.0])
def test_chi2_survival_function_matches_scipy(x, dof):
    assert monitoring.chi2_sf(x, dof) == pytest.approx(scipy.stats.chi2.sf(x, dof), rel=1e-9, abs=1e-300)


def test_categorical_drift_puts_unseen_values_in_other():
    profile = monitoring.profile_values("categorical", ["red"] * 50 + ["blue"] * 50)
    assert profile["categories"] == {"blue": 0.5, "red": 0.5} and profile["complete"]
    result = monitoring.drift(profile, ["red"] * 40 + ["pink"] * 60)
    assert result["psi"] == pytest.approx(monitoring.psi([0.5, 0.5, 0.0], [0.0, 0.4, 0.6]))


def test_many_categories_in_a_small_window_are_not_called_drifted_by_chance():
    """80 cities (50 by name + "other": 51 bins) and 500 values drawn like the training data: PSI alone is
    over 0.1 in most such windows; the chi-square test says it is noise. A real shift still counts."""
    rng = np.random.default_rng(7)
    cities = [f"city{i}" for i in range(80)]
    weights = rng.dirichlet(np.ones(80) * 2)
    profile = monitoring.profile_values("categorical", list(rng.choice(cities, 20_000, p=weights)))
    same = [monitoring.drift(profile, list(rng.choice(cities, 500, p=weights))) for _ in range(40)]
    assert sum(d["psi"] > monitoring.PSI_WARN for d in same) > 20  # PSI alone: a false alarm most times
    # the test's own false-alarm rate is 1% per window where PSI is over 0.1: at most a couple of 40
    assert sum(d["status"] != "ok" for d in same) <= 2, [(d["psi"], d["p_value"]) for d in same]
    shifted = monitoring.drift(profile, list(rng.choice(cities[:20], 500)))
    assert shifted["status"] == "alert" and shifted["p_value"] < 1e-6


def test_a_value_where_training_had_only_missing_values_is_flagged():
    profile = monitoring.profile_values("numeric", [None] * 20)
    values = np.array([np.nan, 3.0])
    assert monitoring.guard_indices(profile, values) == {"out_of_range": [1]}
    profiles = {"x": profile, "y": monitoring.profile_values("numeric", [1.0, 2.0, 3.0])}
    assert monitoring.clean_numeric_features({"x": values, "y": np.array([1.0, 2.0])}, profiles) == {"y"}
    ((index, problem, message),) = monitoring.guard_feature("x", profile, values)
    assert (index, problem) == (1, "out_of_range") and "every one was missing" in message


def test_outcome_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 300).tolist()
    predicted = [t if rng.random() < 0.7 else int(rng.integers(0, 3)) for t in truth]
    assert macro_f1(predicted, truth) == pytest.approx(f1_score(truth, predicted, average="macro"))
    scores = rng.random(300).round(2).tolist()  # rounded: ties, which AUC counts half
    labels = rng.integers(0, 2, 300).tolist()
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    metrics = outcome_metrics([([1 - s, s], y) for s, y in zip(scores, labels)], "classification")
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, scores))
    regression = outcome_metrics([(1.0, 2.0), (3.0, 1.0)], "regression")
    assert regression == {"mae": 1.5, "rmse": pytest.approx(math.sqrt(2.5))}


def test_outcomes_are_compared_as_json_values_true_is_1_and_1_0_is_1():
    """A caller reports outcomes as it knows them: true for class 1 of a probability vector, 1.0 for the
    label 1. Accuracy and AUC agree on the positive class; text stays text."""
    from sklearn.metrics import accuracy_score

    probabilities = [[0.2, 0.8], [0.7, 0.3], [0.4, 0.6], [0.9, 0.1]]
    truth = [True, False, False, False]
    metrics = outcome_metrics(list(zip(probabilities, truth)), "classification")
    argmax = [int(np.argmax(p)) for p in probabilities]
    assert metrics["accuracy"] == accuracy_score(truth, argmax) == 0.75
    assert metrics["f1_macro"] == pytest.approx(f1_score(truth, argmax, average="macro"))
    assert metrics["auc"] == roc_auc_score(truth, [p[1] for p in probabilities]) == 1.0
    labels, outcomes = [1, 0, 1, 0], [1.0, 0.0, 0.0, 0.0]
    assert outcome_metrics(list(zip(labels, outcomes)), "classification")["accuracy"] == 0.75
    assert macro_f1([True, 0, 2], [1, 0.0, 2.0]) == 1.0
    assert outcome_metrics([("1", 1), ("yes", "yes")], "classification")["accuracy"] == 0.5  # "1" is not 1


def test_probability_vectors_are_not_scored_against_class_names_they_do_not_have():
    """predict_proba of a model with classes "no"/"yes": the output schema names no classes, so a column
    index cannot be compared with "yes". No number (not accuracy 0), a reason; stray outcomes are counted."""
    probabilities = [[0.3, 0.7], [0.8, 0.2]]
    with pytest.raises(UnscorableOutcomes, match="outcomes are labels, predictions are probability vectors "
                                                 "without class names"):
        outcome_metrics(list(zip(probabilities, ["yes", "no"])), "classification")
    three = [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]
    metrics = outcome_metrics(list(zip(three, [2, 0.0, "b"])), "classification")
    assert metrics["unscored"] == 1.0 and metrics["accuracy"] == 1.0


def test_probability_vectors_with_class_names_are_scored_against_named_outcomes():
    """With the classes in the output schema (the classifier's classes_), "yes" is column 1: accuracy,
    F1 and AUC as scikit-learn gives them on the labels; an outcome that is no class is counted apart."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(5)
    yes = rng.uniform(size=60)
    probabilities = [[1 - p, p] for p in yes.tolist()]
    truth = ["yes" if p + rng.normal(0, 0.3) > 0.5 else "no" for p in yes]
    output = {"kind": "vector", "width": 2, "labels": ["no", "yes"]}
    metrics = outcome_metrics(list(zip(probabilities, truth)) + [([0.5, 0.5], "maybe")], "classification", output)
    predicted = ["yes" if p > 0.5 else "no" for p in yes]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert metrics["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert metrics["auc"] == pytest.approx(roc_auc_score([t == "yes" for t in truth], yes))
    assert metrics["unscored"] == 1.0


def test_the_float_window_keeps_the_newest_values_in_order_like_a_bounded_deque():
    """The drift window of a numeric feature is a ring of floats; whatever the sizes taken in (smaller,
    equal to or larger than the window, wrapping around), it holds what a deque(maxlen) would."""
    from collections import deque

    rng = np.random.default_rng(3)
    for size in (1, 7, 100):
        window, expected = monitoring.FloatWindow(size), deque(maxlen=size)
        assert len(window) == 0 and window.snapshot().tolist() == []
        for _ in range(40):
            values = rng.normal(size=int(rng.integers(0, 2 * size + 3)))
            values[rng.random(values.size) < 0.1] = np.nan  # missing values stay, as NaN
            window.extend(values)
            expected.extend(values.tolist())
            assert len(window) == len(expected)
            np.testing.assert_array_equal(window.snapshot(), np.array(list(expected), dtype=float))


def test_numeric_features_checked_together_find_exactly_what_guard_indices_finds_one_by_one():
    """clean_numeric_features only skips features where guard_indices would find nothing; the monitor's
    flags and counts are the same as checking every feature on its own."""
    rng = np.random.default_rng(4)
    width = 6
    schema = {"kind": "ndarray", "width": width, "json_type": "number"}
    profiles = {f"x{i}": {"kind": "numeric", "min": -2.0, "max": 2.0, "null_rate": 0.0} for i in range(width)}
    profiles["x1"]["null_rate"] = 0.2  # NaN is fine here
    del profiles["x2"]["min"], profiles["x2"]["max"]  # no range known: only nulls count
    for trial in range(30):
        rows = rng.normal(size=(int(rng.integers(1, 60)), width))
        if trial % 3:
            rows[rng.random(rows.shape) < 0.02] = np.nan
            rows[rng.random(rows.shape) < 0.02] *= 10
        features = monitoring.instance_features(rows.tolist(), schema)
        clean = monitoring.clean_numeric_features(features, profiles)
        for name, values in features.items():
            found = monitoring.guard_indices(profiles[name], values)
            assert (name in clean) == (not found), (name, found)
        monitor = monitoring.Monitor()
        monitor.input_schema, monitor.reference = schema, {"features": profiles}
        checked = monitor._inspect(rows.tolist(), describe=True)
        expected_flags: dict = {}
        for name, values in features.items():
            for problem, indices in monitoring.guard_indices(profiles[name], values).items():
                for index in indices:
                    expected_flags.setdefault(index, []).append(f"{name}:{problem}")
        assert checked.flags == expected_flags
        assert len(checked.violations) == sum(len(labels) for labels in expected_flags.values())
