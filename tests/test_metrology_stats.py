"""Metrology statistics against values computed independently here and against published examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmrbids.phantom.object import regions
from qmrbids.qc.metrology import (MetrologyError, accuracy, icc_a1, load_reference, region_values, repeatability,
                                  reproducibility)


def test_shipped_references_map_onto_the_phantom_labels():
    v1 = load_reference("nist-v1", 3.0)
    assert v1.values["T1"][1] == pytest.approx(1.989) and v1.values["T2"][21] == pytest.approx(0.5813)
    truth = {r.label: r.params for r in regions(3.0)}
    for parameter in ("T1", "T2"):
        assert len(v1.values[parameter]) == 28
        assert all(truth[label][parameter] == pytest.approx(value) for label, value in v1.values[parameter].items())
    assert load_reference("nist-v2", 3.0).values["T1"][1] == pytest.approx(1.88397)
    assert load_reference("nist-v1", 1.5).values["T1"][1] == pytest.approx(2.033)
    with pytest.raises(MetrologyError, match="1.5 T and 3 T"):
        load_reference("nist-v1", 7.0)
    with pytest.raises(MetrologyError, match="no reference values"):
        load_reference("nist-v2", 1.5)


def test_user_reference_table(tmp_path):
    path = tmp_path / "ref.tsv"
    path.write_text("label\tT1\n1\t1.5\n2\t0.8\n")
    assert load_reference(path, 3.0).values == {"T1": {1: 1.5, 2: 0.8}}
    (tmp_path / "bad.tsv").write_text("sphere\tT1\n1\t1\n")
    with pytest.raises(MetrologyError, match="label"):
        load_reference(tmp_path / "bad.tsv", 3.0)


def test_region_values_and_accuracy_with_linearity():
    labels = np.zeros((4, 4, 2), int)
    labels[:2, :, 0], labels[2:, :, 0], labels[:, :, 1] = 1, 2, 3
    reference = {1: 1.0, 2: 0.5, 3: 0.25}
    data = np.where(labels > 0, 1.02 * np.vectorize(lambda l: reference.get(l, 0.0))(labels) + 0.01, 0.0)
    data[0, 0, 0] = np.nan  # excluded, not propagated
    table = region_values(data, labels, reference)
    assert table["n_voxels"].tolist() == [7, 8, 16]
    acc, linearity = accuracy(table, reference, sensitive_range=(0.2, 2.0))
    np.testing.assert_allclose(acc["percent_bias"], [100 * (1.02 * r + 0.01 - r) / r for r in (1.0, 0.5, 0.25)])
    assert linearity["slope"] == pytest.approx(1.02) and linearity["intercept"] == pytest.approx(0.01)
    assert linearity["r_squared"] == pytest.approx(1.0)
    _, narrow = accuracy(table, reference, sensitive_range=(0.4, 2.0))
    assert narrow == {"n_regions": 2}  # too few regions in range for a line
    with pytest.raises(MetrologyError, match="shape"):
        region_values(data[:2], labels, reference)


def test_repeatability_matches_direct_computation_and_covers_the_truth():
    rng = np.random.default_rng(7)
    true_means = np.linspace(0.2, 2.0, 12)
    sigma = 0.01
    sessions = 6
    measured = true_means[:, None] + sigma * rng.standard_normal((12, sessions))
    values = pd.DataFrame([{"region": r, "session": f"ses-{s}", "value": measured[r, s]}
                           for r in range(12) for s in range(sessions)])
    table, summary = repeatability(values)
    variances = [np.var(measured[r], ddof=1) for r in range(12)]
    wsd = np.sqrt(np.mean(variances))
    assert summary["wsd"] == pytest.approx(wsd) and summary["rc"] == pytest.approx(2.77 * wsd, rel=1e-3)
    cvs = [np.std(measured[r], ddof=1) / np.mean(measured[r]) for r in range(12)]
    assert summary["wcv_percent"] == pytest.approx(100 * np.sqrt(np.mean(np.square(cvs))))
    low, high = summary["rc_ci95"]
    assert low < 2.77 * sigma < high and summary["df"] == 12 * 5
    diff = measured[:, 1] - measured[:, 0]
    assert summary["ba_bias"] == pytest.approx(diff.mean())
    assert summary["ba_loa"] == pytest.approx([diff.mean() - 1.96 * diff.std(ddof=1), diff.mean() + 1.96 * diff.std(ddof=1)])
    assert table["rc"].tolist() == pytest.approx([2.7718 * np.std(measured[r], ddof=1) for r in range(12)], rel=1e-4)


def test_icc_matches_shrout_and_fleiss_example():
    """Shrout & Fleiss, Psychol Bull 1979;86:420, Table 2: ICC(2,1) = 0.29."""
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    assert icc_a1(ratings) == pytest.approx(0.2898, abs=1e-4)


def test_reproducibility_variance_components_and_site_bias():
    rng = np.random.default_rng(3)
    regions_, sites, repeats = 8, 3, 4
    true = np.linspace(0.3, 1.5, regions_)
    site_offset = np.array([0.0, 0.02, -0.01])
    rows = []
    for r in range(regions_):
        for s in range(sites):
            for k in range(repeats):
                rows.append({"region": r, "site": f"site{s}", "session": k,
                             "value": true[r] * (1 + site_offset[s]) + 0.005 * rng.standard_normal()})
    values = pd.DataFrame(rows)
    table, summary = reproducibility(values, reference=dict(enumerate(true)))
    for r in range(regions_):  # balanced one-way ANOVA, written out
        groups = [values[(values.region == r) & (values.site == f"site{s}")]["value"].to_numpy() for s in range(sites)]
        msw = np.mean([np.var(g, ddof=1) for g in groups])
        msb = repeats * np.var([g.mean() for g in groups], ddof=1)
        sd_r = np.sqrt(max(0.0, (msb - msw) / repeats) + msw)
        row = table[table.region == r].iloc[0]
        assert row["sd_reproducibility"] == pytest.approx(sd_r) and row["rdc"] == pytest.approx(2.77 * sd_r, rel=1e-3)
    bias = summary["site_percent_bias"]
    assert bias["site1"] == pytest.approx(2.0, abs=0.3) and bias["site2"] == pytest.approx(-1.0, abs=0.3)
    assert 0.95 < summary["icc_a1"] <= 1.0  # regions span a wide range: agreement is dominated by it
