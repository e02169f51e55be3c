"""The figures the notebooks share (seaborn/matplotlib). Each returns its matplotlib Figure."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import paper

sns.set_theme(context="notebook", style="whitegrid")


def label(model: str) -> str:
    return paper.MODEL_LABELS.get(model, model)


def win_matrix_heatmap(
    share: pd.DataFrame,
    *,
    title: str = "Share of non-tied battles won (row over column)",
    ax=None,
    vmin: float = 0.0,
    vmax: float = 1.0,
):
    """A head-to-head matrix drawn like the paper's Figure 2."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 5.5))
    shown = share.rename(index=label, columns=label)
    sns.heatmap(
        shown,
        annot=True,
        fmt=".2f",
        annot_kws={"fontsize": 8},  # two decimals of seven systems fit their cells
        cmap="RdBu_r",
        center=0.5,
        vmin=vmin,
        vmax=vmax,
        square=True,
        cbar_kws={"shrink": 0.7},
        ax=ax,
        mask=shown.isna(),
    )
    # A colorbar of many levels is drawn as an embedded PNG; on the real release every raster fails
    # the share-safe scan, so its colours stay vector shapes.
    colorbar = ax.collections[0].colorbar if ax.collections else None
    if colorbar is not None:
        colorbar.solids.set_rasterized(False)
    ax.set_title(title)
    ax.set_xlabel("opponent")
    ax.set_ylabel("system")
    fig.tight_layout()
    return fig


def win_matrices(left: pd.DataFrame, right: pd.DataFrame, *, titles: tuple[str, str], figsize=(16, 7)):
    """Two win matrices side by side (ours beside the paper's, a judge's beside the clinicians')."""
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    win_matrix_heatmap(left, title=titles[0], ax=axes[0])
    win_matrix_heatmap(right, title=titles[1], ax=axes[1])
    return fig


def forest(table: pd.DataFrame, value, low, high, *, paper_values=None, planted=None, xlabel="", title="", ax=None):
    """Point estimates with CIs per model, the paper's values (and planted truth) beside."""
    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(t) + 1.2)) if ax is None else (ax.figure, ax)
    y = np.arange(len(t))
    ax.errorbar(
        t[value],
        y,
        xerr=[t[value] - t[low], t[high] - t[value]],
        fmt="o",
        color="C0",
        capsize=3,
        label="this data (95% CI)",
    )
    if paper_values:
        ax.scatter([paper_values.get(m, np.nan) for m in t.system], y, marker="D", color="C3", zorder=3, label="paper")
    if planted:
        ax.scatter(
            [planted.get(m, np.nan) for m in t.system], y, marker="x", color="k", zorder=4, label="planted truth"
        )
    ax.set_yticks(y, [label(m) for m in t.system])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def table3_headline(table3: pd.DataFrame, *, planted: dict | None = None, synthetic: bool = False):
    """Table 3 in one figure: correct %, win rate and mean rank per system with 95% CIs, the paper's
    values marked (and the planted truth on the synthetic cohort): the index's headline."""
    from . import paper

    t = table3.reset_index(drop=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.5 * len(t) + 1.8), sharey=True)
    panels = (
        ("correct_pct", "correct", "% correct"),
        ("win_rate", "win_rate", "win rate"),
        ("mean_rank", "mean_rank", "mean rank (1 = best)"),
    )
    for ax, (value, ci, xlabel) in zip(axes, panels):
        marks = {"paper_values": dict(zip(paper.TABLE3.system, paper.TABLE3[value]))}
        marks["planted"] = planted.get(value) if planted else None
        forest(t, value, f"{ci}_ci_low", f"{ci}_ci_high", ax=ax, xlabel=xlabel, **marks)
        if ax is not axes[0]:
            ax.get_legend().remove()
    kind = "synthetic cohort: planted, not measured" if synthetic else "clinician labels"
    fig.suptitle(f"Table 3 with 95% CIs ({kind}); diamonds: the paper")
    fig.tight_layout()
    return fig


def token_length_hist(token_counts: pd.DataFrame, context_lengths=paper.CONTEXT_LENGTHS):
    """Distribution of record lengths per tokenizer (log scale) with context lengths marked."""
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(token_counts, x="n_tokens", hue="tokenizer", log_scale=True, element="step", bins=30, ax=ax)
    for c in context_lengths:
        ax.axvline(c, color="grey", lw=0.8, ls="--")
        ax.text(
            c, ax.get_ylim()[1] * 0.95, f"{c // 1024}k", rotation=90, va="top", ha="right", fontsize=8, color="grey"
        )
    ax.set_xlabel("tokens per EHR (log scale)")
    ax.set_title("EHR length in each tokenizer")
    fig.tight_layout()
    return fig


def fit_curve(fits: pd.DataFrame, paper_points: dict | None = None):
    """Share of records that fit entirely in each context, per tokenizer, with the paper's figures."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(fits, x="context", y="fit_pct", hue="tokenizer", marker="o", ax=ax)
    if paper_points:
        ax.scatter(
            list(paper_points), list(paper_points.values()), marker="D", color="C3", zorder=3, label="paper (cl100k)"
        )
        ax.legend()
    ax.set_xscale("log", base=2)
    ax.set_xticks(fits.context.unique(), [f"{c // 1024}k" for c in fits.context.unique()])
    ax.set_ylabel("% of EHRs that fit entirely")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylim(-2, 102)
    fig.tight_layout()
    return fig


def bar_counts(series: pd.Series, title: str, xlabel: str = "count", top: int = 20):
    """Horizontal bars of counts (events per type, notes per type...); a suppressed small cell
    ("<11") has no bar."""
    s = pd.to_numeric(series, errors="coerce").dropna().sort_values(ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(s) + 1.2))
    sns.barplot(x=s.values, y=[str(i) for i in s.index], ax=ax, color="C0", orient="h")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    return fig


def timeline(events: pd.DataFrame, max_patients: int = 40):
    """One line per patient from first to last event, dots at encounters, in days since the
    patient's first event (no identifier and no record date is shown: dates tied to a patient are
    identifiers under HIPAA's safe harbor)."""
    first = events.groupby("person_id", observed=True).timestamp.transform("min")
    days = (events.timestamp - first).dt.total_seconds() / 86400
    rel = events.assign(day=days)
    spans = rel.groupby("person_id", observed=True).day.max().sort_values(ascending=False).head(max_patients)
    fig, ax = plt.subplots(figsize=(8, 0.16 * len(spans) + 1.5))
    for i, (pid, last) in enumerate(spans.items()):
        ax.plot([0, last], [i, i], color="C0", lw=1.5)
        enc = rel[rel.person_id == pid].groupby("encounter").day.min()
        ax.scatter(enc.values, np.full(len(enc), i), s=3, color="C1")
    ax.set_yticks([])
    ax.set_xlabel("days since the patient's first event")
    ax.set_ylabel(f"patients (the {len(spans)} longest)")
    ax.set_title("Timeline per patient: span and encounters")
    fig.tight_layout()
    return fig


def interval_bars(
    table: pd.DataFrame,
    *,
    x: str,
    hue: str,
    value: str,
    low: str,
    high: str,
    n: str | None = None,
    order=None,
    hue_order=None,
    xlabel: str,
    ylabel: str,
    title: str,
):
    """Bars of `value` per `x` (in `order`) and `hue` (in `hue_order`), each with its CI as an error
    bar and, with `n`, its n written above it; the legend sits beside the axes, off the data."""
    order = list(order) if order is not None else list(dict.fromkeys(table[x]))
    hues = list(hue_order) if hue_order is not None else list(dict.fromkeys(table[hue]))
    cells = table.set_index([x, hue])
    width = 0.8 / max(len(hues), 1)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.3 * len(order) + 3.5), 4.6))
    top = 0.0
    for k, h in enumerate(hues):
        at = np.arange(len(order)) + (k - (len(hues) - 1) / 2) * width
        rows = cells.reindex([(g, h) for g in order])
        v = rows[value].to_numpy(float)
        lo, hi = rows[low].to_numpy(float), rows[high].to_numpy(float)
        err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
        ax.bar(at, v, width=width * 0.92, color=f"C{k}", label=label(h))
        ax.errorbar(at, v, yerr=np.where(np.isnan(err), 0, err), fmt="none", ecolor="#333", capsize=2, lw=0.8)
        if n is not None:
            for xi, yi, ni in zip(at, np.where(np.isnan(hi), v, hi), rows[n].to_numpy(float)):
                if np.isfinite(ni):
                    ax.text(xi, (yi if np.isfinite(yi) else 0) + 1.5, f"{int(ni)}", ha="center", va="bottom",
                            fontsize=7, rotation=90)  # fmt: skip
        top = max(top, np.nanmax(np.where(np.isnan(hi), v, hi)) if np.isfinite(v).any() else 0)
    ax.set_xticks(np.arange(len(order)), [textwrap.fill(str(g), 14) for g in order])  # long names wrap, not overlap
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(105, top + 12))
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    if n is not None:
        ax.annotate("numbers above bars: instructions in the cell", (0, -0.16), xycoords="axes fraction",
                    fontsize=8, color="#555", va="top")  # fmt: skip
    fig.tight_layout()
    return fig


def accuracy_bars(accuracy: pd.DataFrame, *, title: str):
    """Auto-graded accuracy (%) per strategy @ context and system (`grading.accuracy_table`, reset),
    each bar with its Wilson interval and the answers graded."""
    t = accuracy.assign(label=accuracy.strategy.str.replace("_", " ") + accuracy.context.map(
        lambda c: f" @{c}" if c else ""))  # fmt: skip
    return interval_bars(t, x="label", hue="system", value="accuracy_pct", low="ci_low", high="ci_high", n="graded",
                         xlabel="strategy @ context", ylabel="% of answers stating the value (95% CI)",
                         title=title)  # fmt: skip


def breakdown_bars(breakdown: pd.DataFrame, *, title: str, by: str = "group", order=None):
    """Correct % per system within each group of a `clinicians.breakdown`, in `order`, each bar with
    its bootstrap CI and its number of instructions; `by` names the grouping on the axis."""
    systems = paper.in_paper_order(breakdown.system)
    return interval_bars(
        breakdown,
        x="group",
        hue="system",
        value="correct_pct",
        low="correct_ci_low",
        high="correct_ci_high",
        n="n_instructions",
        order=order,
        hue_order=systems,
        xlabel=by,
        ylabel="correct % (95% CI)",
        title=title,
    )


def retention_curves(retention: pd.DataFrame):
    """Evidence retained (%) per strategy across context lengths. Strategies whose curves are identical
    are drawn as one line named for all of them (said under the plot); the legend sits beside the axes."""
    wide = retention.pivot(index="strategy", columns="context", values="retained_pct").round(6)
    groups: dict[tuple, list[str]] = {}
    for strategy, row in wide.iterrows():
        groups.setdefault(tuple(row.fillna(-1)), []).append(str(strategy))
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    ctx = sorted(retention.context.unique())
    for k, names in enumerate(groups.values()):
        row = wide.loc[names[0]]
        ax.plot(row.index, row.to_numpy(), marker="o", color=f"C{k % 10}", label=" = ".join(names))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ctx, [f"{c // 1024}k" for c in ctx])
    ax.minorticks_off()
    ax.set_ylabel("% of instructions whose evidence is in the prompt")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylim(-2, 102)
    ax.set_title("Evidence retention by truncation strategy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    same = [" and ".join(names) for names in groups.values() if len(names) > 1]
    if same:
        ax.annotate("identical, drawn as one line: " + "; ".join(same), (0, -0.2), xycoords="axes fraction",
                    fontsize=8, color="#555", va="top")  # fmt: skip
    fig.tight_layout()
    return fig


def metric_correlation_bars(
    table: pd.DataFrame, ceiling: tuple[float, float, float] | None = None, paper_table: pd.DataFrame | None = None
):
    """Mean Kendall tau per metric with CIs, the paper's values beside and the inter-rater ceiling."""
    t = table.sort_values("mean_tau", ascending=False).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(t) + 1.5))
    y = np.arange(len(t))
    ax.errorbar(
        t.mean_tau,
        y,
        xerr=[t.mean_tau - t.ci_low, t.ci_high - t.mean_tau],
        fmt="o",
        capsize=3,
        label="this data (95% CI)",
    )
    if paper_table is not None:
        pv = paper_table.set_index("metric").mean_tau
        ax.scatter([pv.get(m, np.nan) for m in t.metric], y, marker="D", color="C3", label="paper", zorder=3)
    if ceiling is not None:
        mean, lo, hi = ceiling
        ax.axvspan(lo, hi, color="grey", alpha=0.2)
        ax.axvline(mean, color="grey", ls="--", label=f"inter-rater ceiling ({mean:.2f})")
    ax.set_yticks(y, t.metric)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("mean Kendall's tau-b with clinician ranking")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig


def table3_forests(table3: pd.DataFrame, *, planted: dict | None = None) -> None:
    """Correct % and mean rank per system with CIs, the paper's values (and planted truth) beside."""
    from . import paper

    for value, ci, xlabel, title in (
        ("correct_pct", "correct", "% of responses judged correct", "Correctness per model"),
        ("mean_rank", "mean_rank", "mean rank (1 = best)", "Mean clinician rank per model"),
    ):
        forest(
            table3,
            value,
            f"{ci}_ci_low",
            f"{ci}_ci_high",
            paper_values=dict(zip(paper.TABLE3.system, paper.TABLE3[value])),
            planted=planted[value] if planted else None,
            xlabel=xlabel,
            title=title,
        )


def figure4(ranked: pd.DataFrame, *, prefer=("bertscore", "chrf++")) -> None:
    """Figure 4: generated systems by one metric (the first of `prefer` present), with CIs."""
    metric = next((m for m in prefer if m in set(ranked.metric)), ranked.metric.iloc[0])
    part = ranked[ranked.metric == metric]
    forest(
        part,
        "mean",
        "ci_low",
        "ci_high",
        xlabel=f"mean {metric}",
        title=f"Figure 4: generated systems by {metric} (95% CI over instructions)",
    )


def judge_transfer(transfer: pd.DataFrame, *, judge: str = "judge"):
    """Each system's correct % and win rate by the judge against the clinicians' (the diagonal:
    no error), with the judge's transfer error (RMSE) in the titles."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (name, scale, unit) in zip(axes, (("correct_pct", 100, "correct %"), ("win_rate", 1, "win rate"))):
        x, y = transfer[f"clinician_{name}"], transfer[f"judge_{name}"]
        ax.plot([0, scale], [0, scale], color="grey", lw=1, ls="--")
        ax.scatter(x, y)
        for sx, sy, s in zip(x, y, transfer.system):
            ax.annotate(label(s), (sx, sy), fontsize=8, xytext=(3, 3), textcoords="offset points")
        rmse = transfer.attrs.get(f"transfer_error_{name}", np.nan)
        title = f"{unit}: transfer error (RMSE) {rmse:.3g}"
        ax.set(xlabel=f"clinicians' {unit}", ylabel=f"{judge}'s {unit}", title=title)
    fig.tight_layout()
    return fig


def label_budget_curves(plan: pd.DataFrame):
    """CI width against the number of clinician labels, for the labels alone and with the judge."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if not len(plan):
        ax.text(0.5, 0.5, plan.attrs.get("note", "nothing to plan"), ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for method, part in plan.groupby("method"):
        ax.plot(part.k, part.mean_width, marker="o", label=f"{method} (coverage {part.coverage.mean():.2f})")
    ax.set(xlabel="clinician labels of the new system (k)", ylabel="95% CI width, correct % (points)", xscale="log")
    ax.set_xticks(sorted(plan.k.unique()), [str(k) for k in sorted(plan.k.unique())])
    ax.minorticks_off()  # a log axis's minor labels read "3 × 10¹"
    ax.legend()
    fig.tight_layout()
    return fig


def design_widths(table: pd.DataFrame):
    """Each label plan design's 95% CI width against the number of clinician labels (labels + judge,
    solid; the uniform design's labels alone, dashed), with its simulated coverage in the legend."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if not len(table):
        ax.text(
            0.5, 0.5, table.attrs.get("note", "nothing to compare"), ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
        return fig
    both = table[table.method == "labels+judge"]
    for design, part in both.groupby("design", sort=False):
        ax.plot(part.k, part.mean_width, marker="o", label=f"{design} + judge (coverage {part.coverage.min():.2f}+)")
    alone = table[(table.method == "labels") & (table.design == "uniform")]
    ax.plot(alone.k, alone.mean_width, ls="--", color="grey", label="uniform, labels alone")
    ks = sorted(table.k.unique())
    ax.set(xlabel="clinician labels of the system (k)", ylabel="95% CI width, correct % (points)", xscale="log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    return fig


def sweep_axes(findings: pd.DataFrame, axes: list[str], *, title: str):
    """One finding along each axis of a sweep: one panel per axis (its values in the sweep's
    order), one line per combination of the other axes' values, the CIs as error bars."""
    fig, panels = plt.subplots(1, len(axes), figsize=(5.2 * len(axes), 3.6), squeeze=False)
    for ax, axis in zip(panels[0], axes):
        order = list(dict.fromkeys(findings[axis]))
        others = [a for a in axes if a != axis]
        groups = findings.groupby(others, sort=False) if others else [((), findings)]
        for key, part in groups:
            part = part.set_index(part[axis].map(order.index)).sort_index()
            value = pd.to_numeric(part.value, errors="coerce")
            low, high = pd.to_numeric(part.ci_low, errors="coerce"), pd.to_numeric(part.ci_high, errors="coerce")
            err = [(value - low).fillna(0).clip(lower=0), (high - value).fillna(0).clip(lower=0)]
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{o.rsplit('.', 1)[-1]}={v}" for o, v in zip(others, key)) or None
            ax.errorbar(part.index, value, yerr=err, marker="o", capsize=3, label=label)
        ax.set_xticks(range(len(order)), [str(v) for v in order])
        unit = findings.unit.dropna().iloc[0] if findings.unit.notna().any() else ""
        ax.set(xlabel=axis.rsplit(".", 1)[-1], ylabel=unit or "value")
        if others:
            ax.legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
