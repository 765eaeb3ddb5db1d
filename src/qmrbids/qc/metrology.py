"""Phantom metrology as QIBA defines it: bias against reference values, repeatability, reproducibility.

Definitions (Raunig et al. Stat Methods Med Res 2015;24:27; Obuchowski et al. ibid. 2015;24:68):
- bias = mean measured - reference, percentage bias = 100 * bias / reference, per region;
  linearity = ordinary least squares of the regions' means on their reference values;
- repeatability (same scanner, repeated sessions): within-region SD wSD = sqrt(mean of the regions'
  sample variances), pooled over regions with their degrees of freedom; wCV = root mean square of
  the regions' coefficients of variation; repeatability coefficient RC = 2.77 * wSD (1.96 * sqrt 2),
  with the chi-square 95 % confidence interval on df = sum(n_i - 1); Bland-Altman bias and 95 %
  limits of agreement of the differences between two sessions;
- reproducibility (across scanners/sites): per region, one-way ANOVA by site gives the between-site
  and within-site variances; reproducibility SD = sqrt(sum of both), reproducibility coefficient
  RDC = 2.77 * that SD; ICC(A,1) (McGraw & Wong 1996; Shrout & Fleiss ICC(2,1): two-way random
  effects, absolute agreement, single measurement) of the site means with regions as subjects;
  per-site bias = mean percentage bias over the regions with a reference.
Relaxation-time errors grow with the value, so every table also gives the relative measures.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from qmrbids.resources import data_path

RC_FACTOR = 1.96 * np.sqrt(2.0)  # 2.77: the 95 % limit for the difference of two measurements
#: Which reference parameter a quantitative map is compared with.
MAP_PARAMETER = {"T1map": "T1", "T2map": "T2"}


class MetrologyError(ValueError):
    """Unusable metrology input (unknown reference, mismatched label image)."""


@dataclass(frozen=True)
class Reference:
    """Reference values of one phantom table at one field strength: parameter -> label -> seconds."""

    name: str
    citation: str
    temperature_c: float | None
    values: dict[str, dict[int, float]]


def reference_names() -> list[str]:
    return sorted(_catalogue())


def _catalogue() -> dict:
    return yaml.safe_load(data_path("validators", "references", "references.yaml").read_text())


def load_reference(spec: str | Path, field_strength: float) -> Reference:
    """A shipped table (``nist-v1``, ``nist-v2``) or a user TSV with a ``label`` column and one
    column per parameter (``T1``, ``T2`` ...) in seconds."""
    catalogue = _catalogue()
    if str(spec) in catalogue:
        meta = catalogue[str(spec)]
        with data_path("validators", "references", meta["file"]).open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        key = {1.5: "1p5T", 3.0: "3T"}.get(round(float(field_strength), 1))
        if key is None:
            raise MetrologyError(f"{spec} has reference values at 1.5 T and 3 T only, not {field_strength} T")
        values: dict[str, dict[int, float]] = {}
        for array in meta["arrays"].values():
            for parameter, prefix in array["columns"].items():
                column = f"{prefix}_{key}_ms"
                for row in rows:
                    if row.get(column):
                        label = array["first_label"] + int(row["sphere"]) - 1
                        values.setdefault(parameter, {})[label] = float(row[column]) / 1000.0
        if not values:
            raise MetrologyError(f"{spec} has no reference values at {field_strength} T")
        return Reference(str(spec), " ".join(meta["citation"].split()), meta.get("temperature_c"), values)
    path = Path(spec)
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, ValueError) as error:
        known = ", ".join(catalogue)
        raise MetrologyError(f"{path}: not a known reference ({known}) nor a readable TSV: {error}") from None
    if "label" not in table.columns:
        raise MetrologyError(f"{path}: a reference TSV needs a 'label' column")
    values = {c: {int(l): float(v) for l, v in zip(table["label"], table[c], strict=True) if pd.notna(v)}
              for c in table.columns if c != "label"}
    return Reference(path.name, f"user table {path.name}", None, values)


def region_values(data: np.ndarray, labels: np.ndarray, wanted) -> pd.DataFrame:
    """Mean, SD, median and voxel count of ``data`` in every label of ``wanted`` present in ``labels``."""
    if data.shape[:3] != labels.shape[:3]:
        raise MetrologyError(f"map shape {data.shape} and label image shape {labels.shape} differ")
    rows = []
    for label in sorted(wanted):
        inside = data[labels == label]
        inside = inside[np.isfinite(inside)]
        if inside.size:
            rows.append({"label": int(label), "n_voxels": int(inside.size), "mean": float(inside.mean()),
                         "sd": float(inside.std(ddof=1)) if inside.size > 1 else 0.0,
                         "median": float(np.median(inside))})
    return pd.DataFrame(rows, columns=["label", "n_voxels", "mean", "sd", "median"])


def accuracy(regions: pd.DataFrame, reference: dict[int, float],
             sensitive_range: tuple[float, float] | None = None) -> tuple[pd.DataFrame, dict]:
    """Bias per region against ``reference``, and linearity over the regions in the sensitive range."""
    table = regions[regions["label"].isin(list(reference))].copy()
    table["reference"] = table["label"].map(reference).astype(float)
    table["bias"] = table["mean"] - table["reference"]
    table["percent_bias"] = 100.0 * table["bias"] / table["reference"]
    low, high = sensitive_range or (-np.inf, np.inf)
    table["in_sensitive_range"] = table["reference"].between(low, high)
    used = table[table["in_sensitive_range"]]
    linearity = {"n_regions": int(len(used))}
    if len(used) >= 3:
        fit = stats.linregress(used["reference"], used["mean"])
        linearity.update(slope=float(fit.slope), intercept=float(fit.intercept), r_squared=float(fit.rvalue ** 2))
    return table.reset_index(drop=True), linearity


def repeatability(values: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Within-scanner repeatability from ``values`` (columns region, session, value).

    Returns one row per region (n, mean, wSD, wCV, RC) and the pooled summary with the 95 %
    confidence interval of RC and the Bland-Altman statistics of the first two sessions.
    """
    per_region = []
    for region, group in values.groupby("region", sort=True):
        v = group["value"].to_numpy(float)
        if len(v) < 2:
            continue
        sd = float(np.std(v, ddof=1))
        per_region.append({"region": region, "n": len(v), "mean": float(v.mean()), "wsd": sd,
                           "wcv_percent": 100.0 * sd / float(v.mean()), "rc": RC_FACTOR * sd})
    table = pd.DataFrame(per_region, columns=["region", "n", "mean", "wsd", "wcv_percent", "rc"])
    if table.empty:
        return table, {"n_regions": 0}
    df = int((table["n"] - 1).sum())
    wsd = float(np.sqrt(((table["n"] - 1) * table["wsd"] ** 2).sum() / df))
    wcv = float(np.sqrt(np.mean((table["wcv_percent"] / 100.0) ** 2)))
    ci_low, ci_high = (wsd * np.sqrt(df / stats.chi2.ppf(q, df)) for q in (0.975, 0.025))
    summary = {"n_regions": int(len(table)), "df": df, "wsd": wsd, "wcv_percent": 100.0 * wcv,
               "rc": RC_FACTOR * wsd, "rc_ci95": [RC_FACTOR * ci_low, RC_FACTOR * ci_high],
               "rc_percent": 100.0 * RC_FACTOR * wcv}
    summary.update(bland_altman(values))
    return table, summary


def bland_altman(values: pd.DataFrame) -> dict:
    """Bias and 95 % limits of agreement between the first two sessions, absolute and in percent."""
    sessions = sorted(values["session"].unique())
    if len(sessions) < 2:
        return {}
    wide = values.pivot_table(index="region", columns="session", values="value", aggfunc="mean")[sessions[:2]].dropna()
    if len(wide) < 2:
        return {}
    first, second = wide[sessions[0]].to_numpy(float), wide[sessions[1]].to_numpy(float)
    out = {"bland_altman_sessions": [str(s) for s in sessions[:2]]}
    for name, diff in (("", second - first), ("_percent", 100.0 * (second - first) / ((second + first) / 2))):
        bias, sd = float(diff.mean()), float(diff.std(ddof=1))
        out[f"ba_bias{name}"] = bias
        out[f"ba_loa{name}"] = [bias - 1.96 * sd, bias + 1.96 * sd]
    return out


def reproducibility(values: pd.DataFrame, reference: dict[int, float] | None = None) -> tuple[pd.DataFrame, dict]:
    """Across-site reproducibility from ``values`` (columns region, site, session, value)."""
    rows = []
    for region, group in values.groupby("region", sort=True):
        by_site = [g["value"].to_numpy(float) for _, g in group.groupby("site")]
        k, n = len(by_site), sum(len(v) for v in by_site)
        if k < 2:
            continue
        grand = np.concatenate(by_site).mean()
        ms_between = sum(len(v) * (v.mean() - grand) ** 2 for v in by_site) / (k - 1)
        within_df = n - k
        ms_within = sum(((v - v.mean()) ** 2).sum() for v in by_site) / within_df if within_df else 0.0
        n0 = (n - sum(len(v) ** 2 for v in by_site) / n) / (k - 1)
        var_site = max(0.0, (ms_between - ms_within) / n0)
        sd_r = float(np.sqrt(var_site + ms_within))
        rows.append({"region": region, "sites": k, "n": n, "mean": float(grand), "sd_between_sites": float(np.sqrt(var_site)),
                     "sd_within_site": float(np.sqrt(ms_within)), "sd_reproducibility": sd_r,
                     "rdc": RC_FACTOR * sd_r, "rdc_percent": 100.0 * RC_FACTOR * sd_r / float(grand)})
    table = pd.DataFrame(rows, columns=["region", "sites", "n", "mean", "sd_between_sites", "sd_within_site",
                                        "sd_reproducibility", "rdc", "rdc_percent"])
    site_means = values.pivot_table(index="region", columns="site", values="value", aggfunc="mean").dropna()
    summary: dict = {"n_regions": int(len(table)), "sites": [str(s) for s in site_means.columns]}
    if len(table):
        summary["rdc_percent_rms"] = float(np.sqrt(np.mean(table["rdc_percent"] ** 2)))
    if site_means.shape[0] >= 2 and site_means.shape[1] >= 2:
        summary["icc_a1"] = icc_a1(site_means.to_numpy(float))
    if reference:
        per_site = {}
        for site, column in site_means.items():
            known = [r for r in column.index if r in reference]
            if known:
                per_site[str(site)] = float(np.mean([100.0 * (column[r] - reference[r]) / reference[r] for r in known]))
        summary["site_percent_bias"] = per_site
    return table, summary


def icc_a1(y: np.ndarray) -> float:
    """ICC(A,1) of an n-subjects x k-raters matrix (two-way random, absolute agreement, single)."""
    n, k = y.shape
    grand = y.mean()
    rows, cols = y.mean(axis=1), y.mean(axis=0)
    ms_rows = k * ((rows - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((cols - grand) ** 2).sum() / (k - 1)
    ms_error = ((y - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((n - 1) * (k - 1))
    return float((ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n))
