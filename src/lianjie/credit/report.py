"""The model report: one self-contained HTML page (charts embedded as PNG data, no network).

From a registered scorecard's out-of-fold scores: ROC curves (scorecard, calibrated PD and the
LightGBM challenger), the KS curve, default rate and count by score band, calibration, and the
population stability index (PSI) of the score between the development sample and the scores of
recent applications (or, without applications, between the two halves of the sample). An
optional portfolio section adds default rate by band, vintage curves and funders' results.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from typing import Any

import numpy as np

BANDS = 10
PSI_BINS = 10


def roc(y: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-risk)
    ys = y[order]
    tpr = np.concatenate([[0], np.cumsum(ys) / max(ys.sum(), 1)])
    fpr = np.concatenate([[0], np.cumsum(1 - ys) / max((1 - ys).sum(), 1)])
    return fpr, tpr


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index over the expected sample's deciles."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / max(len(expected), 1)
    a = np.histogram(actual, edges)[0] / max(len(actual), 1)
    e, a = np.clip(e, 1e-4, None), np.clip(a, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def score_bands(y: np.ndarray, score: np.ndarray, bands: int = BANDS) -> list[dict[str, Any]]:
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bands + 1)))
    out = []
    for low, high in itertools.pairwise(edges):
        inside = (score >= low) & ((score < high) | (high == edges[-1]))
        n = int(inside.sum())
        out.append({"band": f"{low:.0f}-{high:.0f}", "count": n,
                    "default_rate": float(y[inside].mean()) if n else 0.0})
    return out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def charts(metrics: dict[str, Any], current: np.ndarray | None) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oof = metrics["oof"]
    y = np.array(oof["target"])
    score, pd_, gbm = np.array(oof["score"]), np.array(oof["pd"]), np.array(oof["gbm"])
    out: dict[str, Any] = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, risk in (("scorecard", -score), ("calibrated PD", pd_), ("LightGBM", gbm)):
        fpr, tpr = roc(y, risk)
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend()
    out["roc"] = _png(fig)
    order = np.argsort(score)
    bad = np.cumsum(y[order]) / max(y.sum(), 1)
    good = np.cumsum(1 - y[order]) / max((1 - y).sum(), 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(score[order], bad, label="bads")
    ax.plot(score[order], good, label="goods")
    ax.set(xlabel="score", ylabel="cumulative share", title=f"KS {np.max(np.abs(bad - good)):.3f}")
    ax.legend()
    out["ks"] = _png(fig)
    bands = score_bands(y, score)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([b["band"] for b in bands], [b["default_rate"] for b in bands])
    ax.set(xlabel="score band", ylabel="default rate", title="Default rate by score band")
    ax.tick_params(axis="x", rotation=60)
    out["bands_chart"] = _png(fig)
    out["bands"] = bands
    half = len(score) // 2
    actual = current if current is not None and len(current) else score[half:]
    out["psi"] = psi(score if current is not None and len(current) else score[:half], actual)
    out["psi_basis"] = "recent applications" if current is not None and len(current) else \
        "second half of the sample against the first"
    return out


def render(version: str, metrics: dict[str, Any], current: np.ndarray | None = None,
           portfolio: dict[str, Any] | None = None) -> str:
    c = charts(metrics, current)
    rows = "".join(f"<tr><td>{html.escape(b['band'])}</td><td>{b['count']}</td>"
                   f"<td>{b['default_rate']:.3f}</td></tr>" for b in c["bands"])
    iv = "".join(f"<tr><td>{html.escape(n)}</td><td>{v:.3f}</td><td>"
                 f"{'yes' if n in metrics['selected'] else 'no'}</td></tr>"
                 for n, v in sorted(metrics["iv"].items(), key=lambda kv: -kv[1]))
    sc, lg = metrics["scorecard"], metrics["lightgbm"]
    parts = [
        f"<h1>Credit model report: {html.escape(version)}</h1>",
        f"<p>{metrics['rows']} rows, bad rate {metrics['bad_rate']:.3f}; out-of-fold "
        "(cross-validated) figures.</p>",
        "<table><tr><th>model</th><th>AUC</th><th>KS</th></tr>"
        f"<tr><td>WoE scorecard</td><td>{sc['auc']:.3f}</td><td>{sc['ks']:.3f}</td></tr>"
        f"<tr><td>LightGBM challenger</td><td>{lg['auc']:.3f}</td><td>{lg['ks']:.3f}</td></tr>"
        "</table>",
        f"<p>PSI of the score ({html.escape(c['psi_basis'])}): <b>{c['psi']:.4f}</b> "
        "(below 0.1 stable, 0.1-0.25 watch, above 0.25 shifted).</p>",
        f'<img alt="ROC" src="{c["roc"]}"><img alt="KS" src="{c["ks"]}">',
        f'<img alt="score bands" src="{c["bands_chart"]}">',
        "<h2>Score bands</h2><table><tr><th>band</th><th>count</th><th>default rate</th></tr>"
        f"{rows}</table>",
        "<h2>Information value</h2><table><tr><th>feature</th><th>IV</th><th>selected</th>"
        f"</tr>{iv}</table>",
    ]
    if portfolio is not None:
        parts.append(_portfolio(portfolio))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:"
             "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Credit report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def _portfolio(p: dict[str, Any]) -> str:
    bands = "".join(f"<tr><td>{b['band']}</td><td>{b['loans']}</td><td>{b['default_rate']}</td>"
                    "</tr>" for b in p["default_rate_by_score_band"])
    vint = "".join(f"<tr><td>{m}</td><td>{', '.join(f'{x:.3f}' for x in curve)}</td></tr>"
                   for m, curve in p["vintage_curves"].items())
    fund = "".join(f"<tr><td>{html.escape(f)}</td>" + "".join(
        f"<td>{v}</td>" for v in vals.values()) + "</tr>" for f, vals in p["funders"].items())
    heads = "".join(f"<th>{k}</th>" for k in next(iter(p["funders"].values()), {}))
    return ("<h2>Portfolio</h2><table><tr><th>score band</th><th>loans</th>"
            f"<th>default rate</th></tr>{bands}</table><h3>Vintage curves (cumulative share of "
            f"principal 30+ DPD or written off, by month on book)</h3><table>{vint}</table>"
            f"<h3>Funders</h3><table><tr><th>funder</th>{heads}</tr>{fund}</table>")
