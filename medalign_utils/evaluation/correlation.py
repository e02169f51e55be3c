"""How well automated metrics rank responses as clinicians do (the paper's Table 4 and Figure 3).

Per instruction, Kendall's tau-b between a metric's ranking of the responses and the clinician's
ranking; averaged over instructions, with a percentile bootstrap CI over instructions. Instructions
where either side is constant (tau undefined) are counted and left out. Also: system-level
correlation, the metric-induced head-to-head matrix, and ranking the suite's own systems by each
metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.release import primary_reviewer_rows
from ..stats import BOOTSTRAP, Bootstrap, bootstrap_ci, kendall_tau_b_rows
from . import clinicians

if TYPE_CHECKING:  # annotations only
    from ..data.release import Release


def score_responses(
    responses: pd.DataFrame,
    references: pd.DataFrame,
    metric_names: list[str],
    *,
    reference_annotators: str = "primary",
    sources: dict[str, str] | None = None,
    progress: bool = True,
    metric_kwargs: dict | None = None,
    preset: str = "paper",
) -> tuple[pd.DataFrame, dict]:
    """Score every distinct response against its instruction's reference(s), each metric made with
    the settings of `preset` (`metrics.PRESETS`; `paper` by default, as Table 4 is the paper's).

    `reference_annotators`: "primary" (Annotator_1, the paper's and public code's choice) or "all"
    (every annotator's reference, combined by each metric's `multi_ref`). Returns (scores: one row
    per instruction x model x metric, signatures: metric -> signature; unavailable metrics map to
    their reason and are left out of the scores).
    """
    from .metrics import make_metric, metric_info

    refs = references
    if reference_annotators == "primary":  # the primary reviewer's reference (the paper's and public code's choice)
        refs = primary_reviewer_rows(references, ("clinician_response",))
    ref_lists = refs.groupby("instruction_id").clinician_response.apply(lambda s: [t for t in s if str(t).strip()])
    items = responses.drop_duplicates(["instruction_id", "system"])[["instruction_id", "system", "model_response"]]
    items = items[items.instruction_id.isin(ref_lists.index)].reset_index(drop=True)
    hyps = items.model_response.fillna("").astype(str).tolist()
    ref_for = [ref_lists[i] for i in items.instruction_id]
    src = [sources.get(i, "") for i in items.instruction_id] if sources else None
    rows, signatures = [], {}
    for name in tqdm(metric_names, desc="metrics", disable=not progress):
        metric = make_metric(name, preset, **(metric_kwargs or {}).get(name, {}))
        if not metric.available:
            signatures[name] = f"unavailable: {metric.reason}"
            continue
        info = metric_info(name)
        values = metric.score(hyps, ref_for, sources=src) if info.needs_source else metric.score(hyps, ref_for)
        values = values if info.higher_is_better else -np.asarray(values)  # Table 4 reads higher as better
        signatures[name] = str(metric.signature())
        rows.append(items[["instruction_id", "system"]].assign(metric=name, score=values))
    scores = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["instruction_id", "system", "metric", "score"])
    )
    return scores, signatures


EXCLUSION_REASONS = ("too_few_systems", "constant_metric", "tied_clinicians")


def _varies(x: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per row, whether the present values of x are not all equal (none vary in a table of no columns)."""
    if x.shape[1] == 0:
        return np.zeros(x.shape[0], dtype=bool)
    return np.where(present, x, -np.inf).max(1) > np.where(present, x, np.inf).min(1)


def per_instruction_tau(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """For each metric and instruction, tau-b between the metric's scores and the clinicians'
    ranking (rank 1 = best, so the clinician side is the negated rank) over the systems both sides
    have. Columns metric, instruction_id, tau, n_systems and `excluded`: why tau is undefined (NaN)
    there: fewer than two systems, a constant metric, or every clinician rank tied."""
    out = []
    for metric, part in scores.groupby("metric", sort=False):
        merged = part.merge(labels[["instruction_id", "system", "model_rank"]], on=["instruction_id", "system"])
        s = merged.pivot_table(index="instruction_id", columns="system", values="score", aggfunc="first")
        r = merged.pivot_table(index="instruction_id", columns="system", values="model_rank", aggfunc="first")
        r = r.reindex(index=s.index, columns=s.columns)
        sv, rv = s.to_numpy(float), -r.to_numpy(float)
        both = ~(np.isnan(sv) | np.isnan(rv))
        n_systems = both.sum(1)
        taus = np.full(len(s), np.nan)
        complete = both.all(1)
        taus[complete] = kendall_tau_b_rows(sv[complete], rv[complete])
        for i in np.flatnonzero(~complete & (n_systems >= 2)):  # compare the systems both sides have
            taus[i] = kendall_tau_b_rows(sv[i, both[i]], rv[i, both[i]])[0]

        excluded = np.select(
            [n_systems < 2, ~_varies(sv, both), ~_varies(rv, both)],
            ["too_few_systems", "constant_metric", "tied_clinicians"],
            "",
        )
        excluded = np.where(np.isnan(taus), excluded, "")
        out.append(
            pd.DataFrame(
                {"metric": metric, "instruction_id": s.index, "tau": taus, "n_systems": n_systems, "excluded": excluded}
            )
        )
    cols = ["metric", "instruction_id", "tau", "n_systems", "excluded"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def table4(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    min_systems: int = 2,
) -> pd.DataFrame:
    """The paper's Table 4: metric, mean_tau, ci_low, ci_high, n_instructions, n_excluded and one
    count per reason (`n_too_few_systems`, `n_constant_metric`, `n_tied_clinicians`), sorted by
    mean tau. `min_systems` keeps only instructions with at least that many labelled systems (with
    two, tau can only be -1 or +1); the rest count as too few. The CI resamples instructions, or
    patients (`bootstrap_unit="patient"`: the labels' person_id)."""
    from .clinicians import bootstrap_clusters

    if scores.empty or labels.empty:
        raise ValueError("no scored responses with clinician ranks: Table 4 needs reviewed responses and references")
    taus = per_instruction_tau(scores, labels)
    few = taus.n_systems < min_systems
    taus.loc[few, "tau"] = np.nan
    taus.loc[few, "excluded"] = "too_few_systems"
    rows = []
    for metric, part in taus.groupby("metric", sort=False):
        kept = part[part.tau.notna()]
        valid = kept.tau.to_numpy(float)
        clusters = bootstrap_clusters(labels, kept.instruction_id, bootstrap.unit) if len(kept) else None
        lo, hi = bootstrap_ci(valid, bootstrap=bootstrap, clusters=clusters)
        row = {
            "metric": metric,
            "mean_tau": valid.mean() if len(valid) else np.nan,
            "ci_low": lo,
            "ci_high": hi,
            "n_instructions": len(valid),
            "n_excluded": int(part.tau.isna().sum()),
        }
        row.update({f"n_{reason}": int((part.excluded == reason).sum()) for reason in EXCLUSION_REASONS})
        rows.append(row)
    out = pd.DataFrame(rows).sort_values("mean_tau", ascending=False, kind="stable").reset_index(drop=True)
    out.attrs["settings"] = {
        "tau": "Kendall tau-b per instruction, mean over instructions",
        "ci": f"percentile bootstrap over {bootstrap.unit}s, {bootstrap.n_resamples} resamples, seed {bootstrap.seed}",
        "min_systems": min_systems,
    }
    return out


def preset_sensitivity(
    responses: pd.DataFrame,
    references: pd.DataFrame,
    labels: pd.DataFrame,
    metric_names: list[str],
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    presets: tuple[str, str] = ("paper", "suite"),
    progress: bool = False,
) -> pd.DataFrame:
    """How much the metric settings move Table 4: each metric whose settings differ between the two
    presets, scored under both, with its mean tau under each and the difference."""
    from .metrics import PRESETS

    names = [m for m in metric_names if any(m in PRESETS[p] for p in presets)]
    taus = {}
    for preset in presets:
        scores, _ = score_responses(responses, references, names, progress=progress, preset=preset)
        taus[preset] = table4(scores, labels, bootstrap=bootstrap).set_index("metric").mean_tau
    out = pd.DataFrame({f"tau_{p}": taus[p] for p in presets})
    out["difference"] = out[f"tau_{presets[0]}"] - out[f"tau_{presets[1]}"]
    return out.reset_index()


def system_level(scores: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Per metric, Kendall tau-b and Pearson r between per-model mean metric score and per-model
    mean clinician rank (negated, so positive = agreement), over the systems."""
    from scipy import stats

    mean_rank = labels.groupby("system").model_rank.mean()
    rows = []
    for metric, part in scores.groupby("metric", sort=False):
        m = part.groupby("system").score.mean().reindex(mean_rank.index)
        ok = m.notna()
        tau = stats.kendalltau(m[ok], -mean_rank[ok]).statistic
        r = stats.pearsonr(m[ok], -mean_rank[ok]).statistic if ok.sum() > 2 else np.nan
        rows.append({"metric": metric, "system_tau": tau, "system_pearson": r, "n_systems": int(ok.sum())})
    return pd.DataFrame(rows)


def metric_induced_labels(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rankings of each instruction's responses induced by a metric (1 = highest score; equal
    scores tie), in the shape of clinician labels, for `clinicians.win_matrix` (Figure 3)."""
    part = scores[scores.metric == metric].copy()
    part["model_rank"] = part.groupby("instruction_id").score.rank(ascending=False, method="min")
    part["binary_correct"] = np.nan
    part["n_raters"] = 1
    return part[["instruction_id", "system", "model_rank", "binary_correct", "n_raters"]]


def rank_systems(
    scores: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    patients: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per metric and system, the mean score with a bootstrap CI over instructions (or patients,
    from `patients`: a table of instruction_id and person_id), and the system's place under that
    metric (for ranking the suite's own generated answers)."""
    from .clinicians import bootstrap_clusters

    rows = []
    for (metric, model), part in scores.groupby(["metric", "system"]):
        part = part[part.score.notna()]
        v = part.score.to_numpy(float)
        clusters = bootstrap_clusters(part if patients is None else patients, part.instruction_id, bootstrap.unit)
        lo, hi = bootstrap_ci(v, bootstrap=bootstrap, clusters=clusters)
        rows.append(
            {
                "metric": metric,
                "system": model,
                "n": len(v),
                "mean": v.mean() if len(v) else np.nan,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["place"] = out.groupby("metric")["mean"].rank(ascending=False, method="min").astype(int)
    return out.sort_values(["metric", "place"]) if len(out) else out


def bm25_sources(release: Release, instructions: pd.DataFrame, k: int = 3, max_chars: int = 2000) -> dict[str, str]:
    """The source text of source-augmented metrics: the k BM25 best snippets (encounters) of each
    instruction's EHR for its question, as the paper did for COMET."""
    from ..context.bm25 import SnippetIndex

    out = {}
    for pid, part in instructions.groupby("person_id"):
        if pid not in release.ehr_files:
            continue
        index = SnippetIndex(release.ehr_text(pid))  # once per record, not once per instruction
        for iid, q in zip(part.instruction_id, part.question.fillna("")):
            out[iid] = " ".join(index.snippets(q, k=k))[:max_chars]
    return out


def judgment_scores(judgments: list, release: Release) -> tuple[pd.DataFrame, list[str]]:
    """The rubric, correct and medhelm judgments of `judgments` files as metric scores
    (`judge:<name>:<mode>`, and `...-expected` where verdicts carry probabilities) for the
    release's responses, and what was skipped, one line each. Judgments of no instruction
    of this release are an error."""
    from .judge import as_metric_scores, mode_names, read_judgments

    files = ", ".join(map(str, judgments))
    j = read_judgments(judgments)
    problems = list(j.attrs["skipped"])
    ours = j.instruction_id.astype(str).isin(set(release.model_responses.instruction_id.astype(str)))
    if len(j) and not ours.any():
        raise ValueError(f"{files}: none of its {len(j)} judgments is of an instruction of this release")
    if (~ours).sum():
        problems.append(f"{int((~ours).sum())} judgments of instructions not in this release, skipped")
    j = j[ours]
    scored = mode_names(scored=True)
    if not j["mode"].isin(scored).any():
        problems.append(
            f"{files}: no rubric, correct or medhelm judgment to score, so no judge row"
            " (pairwise judgments place systems in notebook 06, not in Table 4)"
        )
    frames = [as_metric_scores(j, mode) for mode in scored if (j["mode"] == mode).any()]
    empty = pd.DataFrame(columns=["instruction_id", "system", "metric", "score"])
    return (pd.concat(frames, ignore_index=True) if frames else empty), problems


def table4_for_release(
    root,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    metrics: list[str] | None = None,
    combine: str = "primary",
    progress: bool = True,
    preset: str = "paper",
    min_systems: int = 2,
    judgments: list | None = None,
) -> pd.DataFrame:
    """`medalign table4`: load a release, score the metrics, correlate with clinicians. Each file of
    `judgments` (from `medalign judge`) adds its judge as a row `judge:<name>:<mode>` (rubric and
    correct verdicts; pairwise ones have no per-response score)."""
    from ..data.release import load_release
    from .metrics import metric_names

    release = load_release(root)
    clinicians.require_responses(release.model_responses)
    names = metrics or metric_names(default=True)
    sources = (
        bm25_sources(release, release.instructions[release.instructions.has_model_responses])
        if set(metric_names(needs_source=True)).intersection(names)
        else None
    )
    scores, signatures = score_responses(
        release.model_responses, release.references, names, sources=sources, progress=progress, preset=preset
    )
    labels = clinicians.combine_raters(release.model_responses, combine)
    problems: list[str] = []
    if judgments:
        judged, problems = judgment_scores(judgments, release)
        scores = pd.concat([scores, judged], ignore_index=True)
        signatures.update({m: "LLM judge (see the judgments file)" for m in judged.metric.unique()})
    table = table4(scores, labels, bootstrap=bootstrap, min_systems=min_systems)
    missing = [m for m in names if str(signatures.get(m, "")).startswith("unavailable")]
    reviewed = set(labels.system.astype(str))
    for m in sorted(set(scores.metric) - set(table.metric) - set(missing)):
        judged_systems = sorted(set(scores[scores.metric == m].system.astype(str)))
        if not reviewed & set(judged_systems):
            # One HELM run (or one generations file) is one system: Table 4 ranks the reviewed six.
            problems.append(
                f"{m}: scores only {', '.join(judged_systems)}, none of the reviewed systems, so no tau"
                " (Table 4 ranks the six the clinicians ranked: judge those, e.g. `medalign judge DIR --mode medhelm`)"
            )
        else:
            problems.append(f"{m}: no instruction with two or more systems it scored differently, so no tau")
        missing.append(m)
    for m in missing:
        table = pd.concat(
            [
                table,
                pd.DataFrame(
                    [
                        {
                            "metric": m,
                            "mean_tau": np.nan,
                            "ci_low": np.nan,
                            "ci_high": np.nan,
                            "n_instructions": 0,
                            "n_excluded": 0,
                            **{f"n_{reason}": 0 for reason in EXCLUSION_REASONS},
                        }
                    ]
                ),
            ],
            ignore_index=True,
        )
    table["signature"] = table.metric.map(signatures)
    table.attrs["problems"] = problems
    return table


def generated_systems(results: pd.DataFrame, references: pd.DataFrame) -> pd.DataFrame:
    """Generated answers (a results store's rows) as responses to score: one system per model x
    strategy x context (Figure 4 compares them), only instructions with a reference answer."""
    ok = results[results.error.isna() & results.instruction_id.isin(references.instruction_id)]
    return ok.assign(system=ok.system + " · " + ok.strategy + " @" + ok.context.astype(str), model_response=ok.answer)


def score_answers(
    release: Release,
    answers: pd.DataFrame,
    metric_names: list[str],
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    preset: str = "paper",
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics on stored answers (`generation.read_answers`: any generations file) against
    each instruction's reference, as Table 4 scores the six: every answer's scores, and per system
    and metric the mean with a bootstrap CI over instructions (`bootstrap`). Answers to
    instructions with no reference are counted (`attrs["no_reference"]`), not scored."""
    ok = answers[answers.error.isna()] if "error" in answers.columns else answers
    has_ref = ok.instruction_id.isin(set(release.references.instruction_id.astype(str)))
    responses = ok[has_ref].rename(columns={"answer": "model_response"})[["instruction_id", "system", "model_response"]]
    scores, signatures = score_responses(
        responses.assign(model_response=responses.model_response.fillna("").astype(str)),
        release.references,
        metric_names,
        progress=progress,
        preset=preset,
    )
    rows = []
    for (system, metric), part in scores.groupby(["system", "metric"], sort=False):
        low, high = bootstrap_ci(part.score.to_numpy(float), bootstrap=bootstrap)
        rows.append(
            {
                "system": system,
                "metric": metric,
                "mean": part.score.mean(),
                "ci_low": low,
                "ci_high": high,
                "n": len(part),
            }
        )
    summary = pd.DataFrame(rows, columns=["system", "metric", "mean", "ci_low", "ci_high", "n"])
    summary["signature"] = summary.metric.map(signatures)
    summary.attrs["no_reference"] = int((~has_ref).sum())
    summary.attrs["unavailable"] = {m: s for m, s in signatures.items() if str(s).startswith("unavailable")}
    return scores, summary
