"""Result objects for a judge, after scikit-learn's displays: each computed once by a `from_*`
constructor, then read as `.table`, recorded as `.findings()` (keyword sets for
`reports.record_finding`) and drawn by `.plot()`. Notebook 06 builds them and shows them; the CLI's
`agreement` prints a trust display's `summary`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ... import paper
from ...stats import BOOTSTRAP, Bootstrap
from .agreement import as_metric_scores, correct_agreement
from .estimates import label_budget, place_summary, transfer_table
from .labelplans import LabelPlan, label_saving_ceiling
from .modes import mode_names
from .running import read_judgments
from .trust import (
    alt_test,
    correct_agreement_intervals,
    judge_among_clinicians,
    medhelm_agreement,
    pairwise_agreement_intervals,
)

if TYPE_CHECKING:  # annotations only
    from ...data.release import Release


def _kind(metric: str) -> str:
    return "Planted test judge" if ":planted:" in metric else "LLM judge"  # a test fixture is never an LLM


def _who(judge: str) -> str:
    return "planted test judge" if judge == "planted" else judge  # a test fixture is never called an LLM


# What each mode's score is, in words a reader knows.
MODE_WORDS = {
    "rubric": "rubric score",
    "correct": "correct-or-not verdict",
    "pairwise": "pairwise verdicts",
    "medhelm": "MedHELM jury score",
}


def judge_metric_label(metric: str) -> str:
    """A Table 4 row of a judge or jury as a reader reads it: `judge:planted:medhelm-expected` is
    "planted test judge, MedHELM jury score (probability-weighted)"."""
    kind, _, rest = metric.partition(":")
    if kind not in ("judge", "jury") or not rest:
        return metric
    name, _, mode = rest.rpartition(":")
    expected = mode.endswith("-expected")
    words = MODE_WORDS.get(mode.removesuffix("-expected"), mode.removesuffix("-expected"))
    who = _who(name) if kind == "judge" else f"jury of {name.replace('+', ', ')}"
    return f"{who}, {words}" + (" (probability-weighted)" if expected else "")


@dataclass
class JudgeTable4Display:
    """Each judge's per-response scores as Table 4 rows beside two metrics and the clinicians' own
    agreement (the ceiling): per-instruction Kendall tau-b, mean over instructions, bootstrap CI."""

    table: pd.DataFrame
    ceiling: dict  # the clinicians' inter-rater tau with its CI
    bootstrap: Bootstrap
    expected_tau: float | None = None  # the planted judge's, under the label model

    @classmethod
    def from_judgments(
        cls,
        release: Release,
        judgments: pd.DataFrame,
        labels: pd.DataFrame,
        *,
        bootstrap: Bootstrap = BOOTSTRAP,
        metrics=("rougeL", "chrf++"),
        planted_noise: float | None = None,
    ):
        from ...synthetic import LabelModel, expected_judge_tau
        from ..clinicians import inter_rater_tau
        from ..correlation import score_responses, table4

        metric_scores, _ = score_responses(release.model_responses, release.references, list(metrics), progress=False)
        judged = [as_metric_scores(judgments, m) for m in mode_names(scored=True) if (judgments["mode"] == m).any()]
        t4 = table4(pd.concat([metric_scores, *judged], ignore_index=True), labels, bootstrap=bootstrap)
        tau = inter_rater_tau(release.model_responses, bootstrap=bootstrap)
        expected = expected_judge_tau(LabelModel(), planted_noise) if planted_noise is not None else None
        return cls(t4, tau, bootstrap, expected)

    def notes(self) -> list[str]:
        tau, comet = self.ceiling, paper.best_metric()
        out = [
            f"clinicians' inter-rater tau: {tau['mean_tau']:.3f} ({tau['ci_low']:.3f}-{tau['ci_high']:.3f}); "
            f"paper: {comet[0].upper()} {comet[1]:.2f}, inter-rater {paper.INTER_RATER_TAU:.2f}",
            f"every CI on this page: {self.bootstrap.describe()}",
        ]
        if self.expected_tau is not None:
            out.append(f"planted judge: expected tau under the label model {self.expected_tau:.3f}")
        return out

    def findings(self, *, juries: bool = True) -> list[dict]:
        """Each judge's (and, with `juries`, each jury's) agreement with the clinicians. A jury
        with the planted test judge in it is no LLM's: leave it out (`juries=False`)."""
        rows = self.table[
            self.table.metric.str.startswith("judge:") | (self.table.metric.str.startswith("jury:") & juries)
        ]
        return [
            {
                "name": f"{_kind(r.metric)} agreement with clinicians: "
                + judge_metric_label(r.metric).removeprefix("planted test judge, "),
                "value": r.mean_tau,
                "ci": (r.ci_low, r.ci_high),
                "unit": "Kendall tau",
                "compare": paper.table4_compare_text(),
                "planted": ":planted" in r.metric,  # its agreement is set by the generator
                "n_instructions": int(r.n_instructions),
                "null": 0.0,
                "about": "agreement beyond chance",
            }
            for r in rows.dropna(subset=["mean_tau"]).itertuples()
        ]

    def plot(self):
        from ... import plots

        tau = self.ceiling
        ceiling = (tau["mean_tau"], tau["ci_low"], tau["ci_high"]) if tau["n_instructions"] else None
        return plots.metric_correlation_bars(self.table, ceiling=ceiling, paper_table=paper.TABLE4)


def correct_agreement_table(judgments: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per judge with `correct` verdicts: responses, accuracy and Cohen's kappa against the
    clinicians; and per judge and system the correct % by the judge beside the clinicians'."""
    rows, per_system = [], []
    for judge in sorted(judgments[judgments["mode"] == "correct"].judge.unique()):
        a = correct_agreement(judgments, labels, judge=judge)
        rows.append({"judge": judge, "responses": a["n"], "accuracy": a["accuracy"], "cohens_kappa": a["cohens_kappa"]})
        if len(a["per_system"]):
            per_system.append(a["per_system"].assign(judge=judge))
    columns = ["judge", "responses", "accuracy", "cohens_kappa"]
    return pd.DataFrame(rows, columns=columns), (
        pd.concat(per_system, ignore_index=True) if per_system else pd.DataFrame()
    )


@dataclass
class JudgeTrustDisplay:
    """How far to trust one judge, computed once: every agreement figure with its CI (`table`), the
    judge among the clinicians (HealthBench's leave-one-out percentile), the alternative annotator
    test, MedHELM's statistics, the transfer error over the systems and, when asked, the label
    planner. `summary` is every figure as flat `name: value` pairs (`medalign agreement`)."""

    judge: str
    table: pd.DataFrame
    among: pd.DataFrame
    alt_table: pd.DataFrame
    alt: dict
    transfer: pd.DataFrame
    summary: dict
    plan: pd.DataFrame | None = None
    settings: dict = field(default_factory=dict)
    judgments: pd.DataFrame | None = field(default=None, repr=False)
    labels: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def from_judgments(
        cls,
        responses: pd.DataFrame,
        judgments: pd.DataFrame,
        labels: pd.DataFrame,
        *,
        judge: str,
        systems: list[str] | None = None,
        bootstrap: Bootstrap = BOOTSTRAP,
        epsilon: float = 0.2,
    ):
        """`systems`: the systems whose transfer error is measured (default: the labelled ones)."""
        systems = systems or paper.in_paper_order(labels.system)
        boot = {"judge": judge, "bootstrap": bootstrap}
        figures = (correct_agreement_intervals, pairwise_agreement_intervals)
        table = pd.concat([f(judgments, labels, **boot) for f in figures], ignore_index=True)
        among, percentile = judge_among_clinicians(responses, judgments, judge=judge)
        mine = judgments.judge == judge
        has_correct = ((judgments["mode"] == "correct") & mine).any()
        kind = "correct" if has_correct else "rank"
        alt_table, alt = alt_test(responses, judgments, judge=judge, kind=kind, epsilon=epsilon)
        scored = next((m for m in ("rubric", "medhelm") if ((judgments["mode"] == m) & mine).any()), None)
        helm = medhelm_agreement(judgments, labels, judge=judge, mode=scored) if scored else {}
        transfer = transfer_table(judgments, labels, judge=judge, systems=systems)
        summary = cls._summary(
            judge, table, percentile=percentile, has_correct=has_correct, alt=alt, helm=helm, transfer=transfer
        )
        # The most this judge can save: its labels are worth at most 1 / (1 - rho^2) labels alone.
        summary.update(label_saving_ceiling(judgments, labels, judge=judge))
        settings = {"bootstrap": bootstrap.to_dict(), "epsilon": epsilon, "alt_test_kind": kind, "systems": systems}
        return cls(judge, table, among, alt_table, alt, transfer, summary, None, settings, judgments, labels)

    def with_label_plan(self, ks=(10, 20, 40, 80), *, n_draws: int = 100) -> JudgeTrustDisplay:
        """The label-budget planner for this judge (`label_budget`: `n_draws` draws per system and
        k), kept as `plan`; returns the display."""
        systems, seed = self.settings["systems"], self.settings["bootstrap"]["seed"]
        self.plan = label_budget(
            self.judgments, self.labels, judge=self.judge, systems=systems, ks=ks, n_draws=n_draws, seed=seed
        )
        return self

    @staticmethod
    def _summary(judge, table, *, percentile, has_correct, alt, helm, transfer) -> dict:
        out: dict = {"judge": judge}
        for r in table.itertuples(index=False):
            out.update({r.statistic: r.value, f"{r.statistic}_ci_low": r.ci_low, f"{r.statistic}_ci_high": r.ci_high})
        for key in ("accuracy", "cohens_kappa", "pairwise_agreement"):
            for suffix in ("", "_ci_low", "_ci_high"):
                out.setdefault(key + suffix, np.nan)
        out["judge_percentile_among_clinicians"] = percentile[
            "percentile_macro_f1" if has_correct else "percentile_tau"
        ]
        out["judge_percentile_tau"] = percentile["percentile_tau"]
        out.update(
            alt_test_winning_rate=alt["winning_rate"], alt_test_passed=alt["passed"], alt_test_note=alt["reason"]
        )
        for key in ("icc3k", "quadratic_kappa", "spearman", "spearman_ci_low", "spearman_ci_high"):
            out[key] = helm.get(key, np.nan)
        out["transfer_error_correct_pct"] = transfer.attrs["transfer_error_correct_pct"]
        out["transfer_error_win_rate"] = transfer.attrs["transfer_error_win_rate"]
        return out

    def headline(self) -> str:
        s, alt = self.summary, self.alt
        return (
            f"{self.judge}: percentile among clinicians {s['judge_percentile_among_clinicians']:.2f}; "
            f"alt-test ({self.settings['alt_test_kind']}) winning rate {alt['winning_rate']:.2f}, passed: "
            f"{alt['passed']} {alt['reason'] or ''}; ICC(3,k) {s['icc3k']:.3f}, "
            f"quadratic kappa {s['quadratic_kappa']:.3f}"
        )

    def labels_worth(self, k: int) -> float:
        """How many labels alone the planner finds `k` labels plus this judge worth (NaN: not planned)."""
        if self.plan is None:
            return np.nan
        row = self.plan[(self.plan.method == "labels+judge") & (self.plan.k == k)].equivalent_labels
        return float(row.iloc[0]) if len(row) else np.nan

    def findings(self, *, label_k: int = 40) -> list[dict]:
        who, planted = _who(self.judge), self.judge == "planted"
        s = self.summary
        values = (
            ("percentile among clinicians (macro F1)", s["judge_percentile_among_clinicians"], "share of clinicians"),
            ("alternative annotator test winning rate", s["alt_test_winning_rate"], "share of clinicians beaten"),
            ("transfer error of correct %", s["transfer_error_correct_pct"], "points (RMSE over six systems)"),
            (f"{label_k} clinician labels with this judge are worth, in labels without it", self.labels_worth(label_k),
             "labels"),
        )  # fmt: skip
        n = self.labels.instruction_id.nunique() if self.labels is not None else None
        return [
            {"name": f"{who}: {name}", "value": value, "unit": unit, "planted": planted, "n_instructions": n}
            for name, value, unit in values
            if pd.notna(value)
        ]

    def plot(self):
        from ... import plots

        fig = plots.judge_transfer(self.transfer, judge=self.judge)
        if self.plan is not None:
            plots.label_budget_curves(self.plan)
        return fig


@dataclass
class PlacementDisplay:
    """A new system placed beside the six by a judge's pairwise verdicts: every system's win rate by
    the judge beside the clinicians' (`table`), and the new system's win rate and place with the
    bootstrap CI and that CI widened by the judge's transfer error (`summary`). Without answers to
    place, `note` says why and the tables are empty."""

    system: str | None
    judge: str
    table: pd.DataFrame
    summary: dict
    n_instructions: int
    planted: bool = False
    note: str = ""

    @classmethod
    def from_judge(
        cls,
        judge,
        release: Release,
        answers: pd.DataFrame,
        judgments_dir: str | Path,
        *,
        system: str | None = None,
        bootstrap: Bootstrap = BOOTSTRAP,
        limit: int | None = None,
        min_instructions: int = 10,
        progress: bool = True,
    ):
        """Judge `system`'s answers (the first system that answered a reviewed instruction, when
        None) against the six on the reviewed instructions, into `judgments_dir`/placement.jsonl.
        The judge's own files there (`judgments_file`) hold its verdicts on the six: its pairwise
        ones are the baseline battles, its correct ones give the new system's correct %."""
        from ..clinicians import combine_raters, table3
        from .placement import place_new_system, system_to_place
        from .running import judgments_file, response_items

        items = response_items(release)
        system = system_to_place(answers, items, system)
        if system is None:
            return cls(None, judge.name, pd.DataFrame(), {}, 0, note="no generated answer to a reviewed instruction")
        labels = combine_raters(release.model_responses, "primary")
        systems = paper.in_paper_order(labels.system)
        own = [judgments_file(judgments_dir, judge.name, mode) for mode in mode_names()]
        own = [f for f in own if f.is_file()]
        baseline = [f for f in own if f.name.endswith("pairwise.jsonl")]
        out_path = Path(judgments_dir) / "placement.jsonl"
        table = place_new_system(
            judge,
            items,
            answers,
            system,
            release,
            out_path,
            systems=systems,
            baseline_judgments=baseline,
            limit=limit,
            bootstrap=bootstrap,
            min_instructions=min_instructions,
            progress=progress,
        )
        t3 = table3(release.model_responses, bootstrap=bootstrap)
        table = table.assign(clinician_win_rate=table.system.map(t3.set_index("system").win_rate))
        placed = read_judgments([*own, out_path])
        summary = place_summary(
            placed,
            labels,
            judge=judge.name,
            system=f"new:{system}",
            systems=systems,
            bootstrap=bootstrap,
            min_instructions=min_instructions,
        )
        n = table.attrs["n_instructions"]
        note = f"{system} answered {n} reviewed instructions; judge: {judge.name}"
        return cls(system, judge.name, table, summary, n, judge.name == "planted", note)

    KEYS = (
        "win_rate",
        "win_rate_ci_low",
        "win_rate_ci_high",
        "win_rate_transfer_low",
        "win_rate_transfer_high",
        "place",
        "place_ci_low",
        "place_ci_high",
        "n_instructions_judged",
        "note",
    )

    @property
    def summary_table(self) -> pd.DataFrame:
        return pd.Series({k: self.summary.get(k) for k in self.KEYS}, name=f"new:{self.system}").to_frame()

    def findings(self) -> list[dict]:
        s = self.summary
        if not s or pd.isna(s["place"]):
            return []
        interval = f"{s['win_rate_transfer_low']:.3f}–{s['win_rate_transfer_high']:.3f}"
        return [
            {
                "name": f"new system {self.system}: win rate by the {_who(self.judge)} against the six",
                "value": s["win_rate"],
                "ci": (s["win_rate_ci_low"], s["win_rate_ci_high"]),
                "unit": "",
                "compare": f"with the judge's own error (transfer interval): {interval}; place {s['place']:g}",
                "planted": self.planted,
                "n_instructions": int(self.n_instructions),
            }
        ]


@dataclass
class LabelPlanDisplay:
    """Which answers clinicians should label: the 95% interval width and coverage each design gives
    against k (`table`, simulated on the six systems, whose labels are all known, with this judge's
    p(correct)), the plan for the new system (written under `plans_dir`, never on a page: it names
    instructions and answers), and what the judge can save (`note`)."""

    judge: str
    table: pd.DataFrame
    plan: LabelPlan | None
    plan_path: Path | None
    budget: int
    design: str
    saving: dict
    planted: bool = False

    @classmethod
    def from_parameters(cls, parameters: dict, judge, release: Release, answers: pd.DataFrame, judgments, *, system):
        """From notebook 06's parameters (`label_ks`, `label_draws`, `label_budget_k`,
        `label_plan_design`, `label_plans_dir`, `judgments_dir`, `judge_instructions`, `seed`):
        the designs simulated with `judge`'s verdicts on the six, and `system`'s answers judged
        in correct mode (into `judgments_dir`) and planned."""
        from ...config import project_path
        from ..clinicians import combine_raters
        from .labelplans import jury_effective_size, plan_labels
        from .running import generation_items, judgments_file, run_judgments

        ks, draws, seed = list(parameters["label_ks"]), int(parameters["label_draws"]), int(parameters["seed"])
        design, budget = parameters.get("label_plan_design", "active"), int(parameters["label_budget_k"])
        labels = combine_raters(release.model_responses, "primary")
        category = release.instructions.set_index("instruction_id").category
        table = design_widths(judgments, labels, judge=judge.name, ks=ks, n_draws=draws, seed=seed, strata=category)
        saving = {**label_saving_ceiling(judgments, labels, judge=judge.name), **jury_effective_size(judgments, labels)}
        plan = path = None
        if system is not None:
            items = generation_items(release, answers, system)
            if judge.name != "planted":  # a real judge on a CPU: the sample the other judgments cover
                items = items[
                    items.instruction_id.isin(sorted(items.instruction_id)[: parameters["judge_instructions"]])
                ]
            out = judgments_file(project_path(parameters["judgments_dir"]), f"{judge.name}-{system}", "correct")
            run_judgments(judge, "correct", items, release, out, progress=bool(parameters.get("progress", True)))
            new = read_judgments(out)
            n = int(((new.system == system) & new.valid.astype(bool)).sum())
            if n > 2:
                plan = plan_labels(
                    new, system=system, judge=judge.name, budget=min(budget, n - 1), design=design,
                    strata=category, strata_name="category", seed=seed, answers=None,
                )  # fmt: skip
                path = project_path(parameters["label_plans_dir"]) / f"{system}-{design}-k{plan.budget}.tsv"
                if not release.is_synthetic and "reports" in path.resolve().parts:
                    raise ValueError(f"{path}: a label plan names instructions and answers: keep it under data/")
                plan.to_tsv(path)
        return cls(judge.name, table, plan, path, budget, design, saving, judge.name == "planted")

    def labels_saved(self, k: int | None = None) -> float:
        """Labels alone that k labels in this design with the judge are worth, minus k (the
        uniform design's labels-alone width against this design's labels + judge width)."""
        k = k or self.budget
        t = self.table
        alone = t[(t.design == "uniform") & (t.k == k) & (t.method == "labels")].mean_width
        mine = t[(t.design == self.design) & (t.k == k) & (t.method == "labels+judge")].mean_width
        if not len(alone) or not len(mine):
            return np.nan
        return float(k * (alone.iloc[0] / mine.iloc[0]) ** 2 - k)

    @property
    def note(self) -> str:
        s = self.saving
        parts = [
            f"judge {_who(self.judge)}: labels worth at most {s.get('labels_worth_factor', np.nan):.2f}x labels alone"
        ]
        if "jury_effective_size" in s:
            parts.append(
                f"a jury of {s['jury_judges']} judges counts as {s['jury_effective_size']:.2f}"
                f" (error correlation {s['jury_mean_error_correlation']:.2f})"
            )
        if self.plan is not None:
            parts.append(f"plan: {len(self.plan.rows)} answers of {self.plan.system} ({self.design}), under data/")
        return "; ".join(parts)

    def findings(self) -> list[dict]:
        saved = self.labels_saved()
        if pd.isna(saved):
            return []
        return [
            {
                "name": f"{_who(self.judge)}: labels saved by the {self.design} label plan of {self.budget} labels",
                "value": saved,
                "unit": "labels",
                "planted": self.planted,
                "n_instructions": len(self.plan.population) if self.plan is not None else None,
            }
        ]

    def plot(self):
        from ... import plots

        return plots.design_widths(self.table)


def design_widths(judgments, labels, *, judge: str, ks, n_draws: int, seed: int, strata=None) -> pd.DataFrame:
    """Each design's interval width and coverage against k, averaged over the systems whose every
    answer is labelled and judged (`simulate_designs` per system, the judge's p(correct))."""
    from .labelplans import judge_predictions, simulate_designs

    frames = []
    for system in sorted(labels.system.unique()):
        y = labels[labels.system == system][["instruction_id", "binary_correct"]].dropna()
        m = y.merge(judge_predictions(judgments, judge=judge, system=system), on="instruction_id")
        fitting = [k for k in ks if k < len(m) - 1]
        if not fitting:
            continue
        s = m.instruction_id.map(strata).fillna("(none)") if strata is not None else None
        frames.append(simulate_designs(m.binary_correct, m.judge_p, strata=s, ks=fitting, n_draws=n_draws, seed=seed))
    if not frames:
        out = pd.DataFrame(columns=["design", "k", "method", "coverage", "mean_width"])
        out.attrs["note"] = "too few judged and labelled answers per system to compare designs"
        return out
    out = pd.concat(frames).groupby(["design", "k", "method"], sort=False).mean(numeric_only=True).reset_index()
    out["coverage_note"] = np.where(out.coverage < 0.93, "coverage under 0.93", "")
    return out
