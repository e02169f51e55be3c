"""A judge measured against the clinicians: its scores as Table 4 rows (juries included), invalid
verdicts and cost, correctness agreement and per-system bias, pairwise battles with position bias,
the judge's Figure 2 and win rates (on the clinicians' head-to-head code), self-preference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...stats import BOOTSTRAP, Bootstrap
from .modes import get_mode

# ------------------------------------------------------------------ scores and the jury


def judge_scores(judgments: pd.DataFrame, mode: str, *, expected: bool = False) -> pd.DataFrame:
    """Each valid verdict's score (or, with `expected`, its probability-weighted score where the
    judgment has one): instruction_id, system, judge, score."""
    j = judgments[(judgments["mode"] == mode) & judgments.error.isna() & judgments.valid.astype(bool)]
    column = "expected_score" if expected else "score"
    values = j[column] if column in j.columns else pd.Series(np.nan, index=j.index)
    j = j.assign(score=pd.to_numeric(values, errors="coerce"))
    if expected:
        j = j.dropna(subset=["score"])
    return j[["instruction_id", "system", "judge", "score"]].reset_index(drop=True)


def jury_scores(judgments: pd.DataFrame, mode: str, *, expected: bool = False) -> pd.DataFrame:
    """The jury's score per response: the mean over its valid judges, with how many there were.
    Every juror's own score stays in `judge_scores`. In `medhelm` mode this is MedHELM's jury
    score, the mean of every criterion of every valid juror: judgments that say how many criteria
    they pooled (`n_criteria`, HELM's imported jurors) weigh by it, so a juror's extra `overall`
    counts as HELM counts it. A response no juror scored validly gets no score and is counted
    (`attrs["n_unscored"]`), unless its judgments carry a `jury_default` (HELM's 1.0, imported
    with HELM's jurors), which it then takes, as HELM does."""
    s = judge_scores(judgments, mode, expected=expected)
    j = judgments[(judgments["mode"] == mode) & judgments.error.isna()]
    keys = ["instruction_id", "system"]
    if "n_criteria" in j.columns and len(s):
        valid = j[j.valid.astype(bool)]
        weight = pd.to_numeric(valid.n_criteria, errors="coerce").fillna(1).clip(lower=1).to_numpy()
        s = s.assign(_w=weight, _ws=s.score.to_numpy() * weight)
        out = s.groupby(keys).agg(_ws=("_ws", "sum"), _w=("_w", "sum"), n_judges=("score", "size")).reset_index()
        out = out.assign(score=out._ws / out._w)[[*keys, "score", "n_judges"]]
    else:
        out = s.groupby(keys).score.agg(score="mean", n_judges="size").reset_index()
    invalid = j[~j.valid.astype(bool)].groupby(keys).size().rename("n_invalid")
    out = out.merge(invalid.reset_index(), on=keys, how="left")
    out["n_invalid"] = out.n_invalid.fillna(0).astype(int)
    unscored = invalid.index.difference(out.set_index(keys).index)
    if "jury_default" in j.columns and len(unscored) and not expected:
        default = j.set_index(keys).jury_default.groupby(level=[0, 1]).first()
        default = pd.to_numeric(default.reindex(unscored), errors="coerce").dropna()
        filled = pd.DataFrame(
            {
                "instruction_id": default.index.get_level_values(0),
                "system": default.index.get_level_values(1),
                "score": default.to_numpy(),
                "n_judges": 0,
                "n_invalid": invalid.reindex(default.index).to_numpy(),
            }
        )
        out = pd.concat([out, filled], ignore_index=True) if len(out) else filled
        unscored = unscored.difference(default.index)
    out.attrs["n_unscored"] = len(unscored)  # responses every juror failed on: no score, counted
    return out


def as_metric_scores(judgments: pd.DataFrame, mode: str, jury: bool = True) -> pd.DataFrame:
    """Judge scores in the shape of metric scores (instruction_id, system, metric, score), one
    "metric" per judge (`judge:<name>:<mode>`), its probability-weighted score where the verdicts
    carry distributions (`judge:<name>:<mode>-expected`) and, with several judges, the jury
    (`jury:<mode>`, `jury:<mode>-expected`): rows for `correlation.table4` beside the metrics."""
    cols = ["instruction_id", "system", "metric", "score"]
    rows, turned = [], get_mode(mode).signed  # Table 4 reads higher as better
    for expected, suffix in ((False, ""), (True, "-expected")):
        s = judge_scores(judgments, mode, expected=expected)
        if not len(s):
            continue
        rows.append(s.assign(metric="judge:" + s.judge + f":{mode}{suffix}", score=turned(s.score))[cols])
        if jury and s.judge.nunique() > 1:
            j = jury_scores(judgments, mode, expected=expected)
            rows.append(j.assign(metric=f"jury:{mode}{suffix}", score=turned(j.score))[cols])
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def invalid_counts(judgments: pd.DataFrame) -> pd.DataFrame:
    """Per judge and mode: judgments, valid, invalid (with the most common reason), failed requests."""
    g = judgments.assign(
        failed=judgments.error.notna(), invalid=judgments.error.isna() & ~judgments.valid.astype(bool)
    ).groupby(["judge", "mode"])
    out = g.agg(
        judgments=("valid", "size"), valid=("valid", "sum"), invalid=("invalid", "sum"), failed=("failed", "sum")
    )
    reasons = (
        judgments[judgments.invalid_reason.notna()]
        .groupby(["judge", "mode"])
        .invalid_reason.agg(lambda s: s.value_counts().index[0])
    )
    return out.assign(most_common_reason=reasons).reset_index()


def cost_table(judgments: pd.DataFrame) -> pd.DataFrame:
    """Per judge and mode: prompt and completion tokens, the share of prompt tokens that repeat a
    prefix already sent for the same instruction (what a server's prefix cache serves), the cost
    at the configured prices, and the cost with the cached-input price where one was given."""
    j = judgments.copy()
    for col in ("repeated_prefix_tokens", "cost_with_prefix_cache", "cost", "seconds"):
        if col not in j.columns:
            j[col] = np.nan
    out = (
        j.groupby(["judge", "mode"])
        .agg(
            judgments=("valid", "size"),
            prompt_tokens=("prompt_tokens", "sum"),
            completion_tokens=("completion_tokens", "sum"),
            repeated_prefix_tokens=("repeated_prefix_tokens", "sum"),
            cost=("cost", "sum"),
            cost_with_prefix_cache=("cost_with_prefix_cache", lambda x: x.sum() if x.notna().all() else np.nan),
            seconds=("seconds", "sum"),
        )
        .reset_index()
    )
    out.insert(5, "repeated_prefix_share", out.repeated_prefix_tokens / out.prompt_tokens.where(out.prompt_tokens > 0))
    return out


def distribution_counts(judgments: pd.DataFrame) -> pd.DataFrame:
    """Per judge and mode: how many valid verdicts carry value probabilities, and from where
    (the local model's distribution, the server's logprobs, or none and why)."""
    j = judgments[judgments.error.isna() & judgments.valid.astype(bool)]
    if "probabilities" not in j.columns:
        j = j.assign(probabilities="none: judged before probabilities were recorded")
    return j.groupby(["judge", "mode", "probabilities"]).size().rename("verdicts").reset_index()


# ------------------------------------------------------------------ agreement with the clinicians


def correct_agreement(judgments: pd.DataFrame, labels: pd.DataFrame, judge: str | None = None) -> dict:
    """The `correct` verdicts against the clinicians' `binary_correct` on the same responses:
    accuracy, Cohen's kappa, and per system the correct % by the judge beside the clinicians'."""
    from ..clinicians import cohens_kappa

    s = judge_scores(judgments, "correct")
    if judge:
        s = s[s.judge == judge]
    m = s.merge(labels[["instruction_id", "system", "binary_correct"]], on=["instruction_id", "system"])
    m = m.dropna(subset=["binary_correct"])
    if m.empty:
        return {"n": 0, "accuracy": np.nan, "cohens_kappa": np.nan, "per_system": pd.DataFrame()}
    per = m.groupby("system").agg(
        n=("score", "size"), judge_correct_pct=("score", "mean"), clinician_correct_pct=("binary_correct", "mean")
    )
    per[["judge_correct_pct", "clinician_correct_pct"]] *= 100
    per["judge_bias_points"] = per.judge_correct_pct - per.clinician_correct_pct
    return {
        "n": len(m),
        "accuracy": float((m.score == m.binary_correct).mean()),
        "cohens_kappa": cohens_kappa(m.score.to_numpy(), m.binary_correct.to_numpy()),
        "per_system": per.reset_index(),
    }


BATTLE_COLUMNS = [
    "judge",
    "instruction_id",
    "system_a",
    "system_b",
    "outcome",
    "flipped",
    "first_choice_ab",
    "first_choice_ba",
]


def pairwise_battles(judgments: pd.DataFrame, judge: str | None = None) -> pd.DataFrame:
    """One row per judged pair and instruction, both orders combined: system_a, system_b, outcome
    ("a", "b" or "tie"); a verdict that flips with the order is a tie (`flipped`). Pairs with an
    invalid or missing verdict in either order are left out and counted in `attrs['n_incomplete']`.
    Where an order was judged twice, its last verdict stands. Rows come sorted by judge,
    instruction and pair."""
    j = judgments[(judgments["mode"] == "pairwise") & judgments.error.isna()]
    if judge:
        j = j[j.judge == judge]
    keys = ["judge", "instruction_id", "pair"]
    last = j.dropna(subset=keys).drop_duplicates(subset=[*keys, "order"], keep="last")
    shape = last.assign(ab=last.order == "AB", ba=last.order == "BA", ok=last.valid.astype(bool))
    per = shape.groupby(keys).agg(n=("order", "size"), ab=("ab", "sum"), ba=("ba", "sum"), ok=("ok", "all"))
    complete = (per.n == 2) & (per.ab == 1) & (per.ba == 1) & per.ok
    done, n_incomplete = per.index[complete], int((~complete).sum())
    if not len(done):
        battles = pd.DataFrame([], columns=BATTLE_COLUMNS)
        battles.attrs["n_incomplete"] = n_incomplete
        return battles
    rows = last[pd.MultiIndex.from_frame(last[keys]).isin(done)]
    ab, ba = (
        rows[rows.order == o].set_index(keys).verdict.reindex(done).map(lambda v: v["winner"]).to_numpy()
        for o in ("AB", "BA")
    )
    # In order AB, A is system a; in BA, A is system b.
    first = pd.Series(ab).map({"A": "a", "B": "b", "tie": "tie"}).to_numpy()
    second = pd.Series(ba).map({"A": "b", "B": "a", "tie": "tie"}).to_numpy()
    system_a, system_b = zip(*(pair.split("|") for pair in done.get_level_values("pair")))
    columns = {
        "judge": done.get_level_values("judge"),
        "instruction_id": done.get_level_values("instruction_id"),
        "system_a": list(system_a),
        "system_b": list(system_b),
        "outcome": np.where(first == second, first, "tie"),
        "flipped": (first != second) & (first != "tie") & (second != "tie"),
        "first_choice_ab": ab,
        "first_choice_ba": ba,
    }
    battles = pd.DataFrame(columns, columns=BATTLE_COLUMNS)
    battles.attrs["n_incomplete"] = n_incomplete
    return battles


def position_bias(battles: pd.DataFrame) -> dict:
    """How much the order sways the judge: the share of decisive verdicts (A or B) that chose the
    answer shown first (0.5 = none), the share of pairs whose verdict flipped with the order, and
    the share that stayed consistent."""
    choices = pd.concat([battles.first_choice_ab, battles.first_choice_ba])
    decisive = choices[choices != "tie"]
    return {
        "pairs": len(battles),
        "first_position_share": float((decisive == "A").mean()) if len(decisive) else np.nan,
        "flipped_share": float(battles.flipped.mean()) if len(battles) else np.nan,
        "consistent_share": float(
            (
                battles.first_choice_ab.map({"A": "a", "B": "b", "tie": "tie"})
                == battles.first_choice_ba.map({"A": "b", "B": "a", "tie": "tie"})
            ).mean()
        )
        if len(battles)
        else np.nan,
    }


def battle_counts(battles: pd.DataFrame, systems: list[str]) -> tuple[list, np.ndarray, np.ndarray]:
    """(instruction ids, W, L): W[i, a, b] = 1 where the judge gave a the win over b on instruction i."""
    ids = sorted(battles.instruction_id.unique())
    pos = {m: k for k, m in enumerate(systems)}
    row = {iid: k for k, iid in enumerate(ids)}
    w = np.zeros((len(ids), len(systems), len(systems)))
    for r in battles.itertuples(index=False):
        if r.system_a not in pos or r.system_b not in pos or r.outcome == "tie":
            continue
        a, b = pos[r.system_a], pos[r.system_b]
        win, lose = (a, b) if r.outcome == "a" else (b, a)
        w[row[r.instruction_id], win, lose] += 1
    return ids, w, np.transpose(w, (0, 2, 1))


def judge_win_matrix(battles: pd.DataFrame, systems: list[str]) -> pd.DataFrame:
    """The judge's Figure 2: share of non-tied battles the row system won over the column system."""
    from ..clinicians import battle_shares

    return pd.DataFrame(battle_shares(*battle_counts(battles, systems)[1:]), index=systems, columns=systems)


def judge_win_rates(
    battles: pd.DataFrame,
    systems: list[str],
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    patients: pd.DataFrame | None = None,
    min_instructions: int = 10,
) -> pd.DataFrame:
    """Each system's win rate from the judge's battles (the paper's WR: the unweighted mean of its
    head-to-head shares), with a percentile bootstrap CI over instructions (or over patients, from
    `patients`: any table of instruction_id and person_id), and its place. A system in battles on
    fewer than `min_instructions` instructions gets no CI (a bootstrap of three instructions can say
    (1.000, 1.000)); `attrs["note"]` names them."""
    from ..clinicians import battle_shares, bootstrap_clusters, win_rates

    ids, w, l = battle_counts(battles, systems)
    if not len(ids):  # no valid verdict to count: every win rate unknown, said so
        empty = pd.DataFrame(
            {
                "system": systems,
                "judge_win_rate": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "battles": 0,
                "place": np.nan,
            }
        )
        empty.attrs["note"] = "no valid pairwise verdicts"
        return empty
    # The clinicians' head-to-head code on the judge's battles: one implementation of the paper's WR.
    point = win_rates(battle_shares(w, l))
    clusters = bootstrap_clusters(battles if patients is None else patients, ids, bootstrap.unit)
    boot = win_rates(battle_shares(w, l, bootstrap.counts(len(ids), clusters)))
    alpha = (1 - bootstrap.confidence) / 2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
    n_instructions = ((w + l).sum(2) > 0).sum(0)
    thin = n_instructions < min_instructions
    out = pd.DataFrame(
        {
            "system": systems,
            "judge_win_rate": point,
            "ci_low": np.where(thin, np.nan, lo),
            "ci_high": np.where(thin, np.nan, hi),
            "battles": (w.sum(0) + l.sum(0)).sum(1),
            "n_instructions": n_instructions,
        }
    )
    out["place"] = out.judge_win_rate.rank(ascending=False, method="min")
    if thin.any():
        names = ", ".join(np.asarray(systems)[thin])
        out.attrs["note"] = f"no CI for {names}: judged on fewer than {min_instructions} instructions"
    return out.sort_values("judge_win_rate", ascending=False).reset_index(drop=True)


def pairwise_agreement(battles: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """The judge against the clinicians' non-tied battles on the same instruction and pair: the
    share it agrees with (its ties count as disagreement), and the share it called a tie."""
    rank = labels.set_index(["instruction_id", "system"]).model_rank
    agree = tie = n = 0
    for r in battles.itertuples(index=False):
        ra, rb = rank.get((r.instruction_id, r.system_a)), rank.get((r.instruction_id, r.system_b))
        if ra is None or rb is None or pd.isna(ra) or pd.isna(rb) or ra == rb:
            continue
        n += 1
        clinicians = "a" if ra < rb else "b"
        agree += r.outcome == clinicians
        tie += r.outcome == "tie"
    return {"battles": n, "agreement": agree / n if n else np.nan, "judge_tie_share": tie / n if n else np.nan}


def self_preference(judgments: pd.DataFrame, mode: str, families: dict[str, list[str]]) -> pd.DataFrame:
    """For each judge the config ties to judged systems (`families`: judge -> systems of its family),
    those systems' mean score from this judge against the mean from the other jurors on the same
    responses; a positive difference is self-preference."""
    s = judge_scores(judgments, mode)
    rows = []
    for judge, systems in families.items():
        own = s[(s.judge == judge) & s.system.isin(systems)]
        others = s[(s.judge != judge) & s.system.isin(systems)]
        both = own.merge(
            others.groupby(["instruction_id", "system"]).score.mean().rename("others").reset_index(),
            on=["instruction_id", "system"],
        )
        rows.append(
            {
                "judge": judge,
                "systems": ", ".join(systems),
                "n": len(both),
                "own_mean": both.score.mean() if len(both) else np.nan,
                "others_mean": both.others.mean() if len(both) else np.nan,
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["self_preference"] = out.own_mean - out.others_mean
    return out


def pairwise_summary(judgments: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """One row per judge with pairwise verdicts: agreement with the clinicians' battles, position
    bias, and the pairs left incomplete."""
    rows = []
    for judge_name in sorted(judgments[judgments["mode"] == "pairwise"].judge.unique()):
        battles = pairwise_battles(judgments, judge=judge_name)
        rows.append(
            {
                "judge": judge_name,
                **pairwise_agreement(battles, labels),
                **position_bias(battles),
                "incomplete_pairs": battles.attrs["n_incomplete"],
            }
        )
    return pd.DataFrame(rows)
