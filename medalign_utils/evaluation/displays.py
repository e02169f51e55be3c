"""Result objects for the clinician-label analyses, after scikit-learn's displays: computed once by a
`from_*` constructor, then read as `.table`, recorded as `.findings()` (keyword sets for
`reports.record_finding`) and drawn by `.plot()`. A notebook builds one and shows it; a test or a
second notebook reads the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .. import paper
from ..stats import BOOTSTRAP, Bootstrap
from .clinicians import head_to_head_ci, mcnemar, patient_correlation, table3, win_matrix


@dataclass
class Table3Display:
    """The paper's Table 3 (correct %, win rate, mean rank with CIs) beside the paper's values,
    and on the synthetic cohort beside the planted truth with how many CIs hold it."""

    table: pd.DataFrame  # ours, beside the paper (and the planted values)
    bootstrap: Bootstrap
    planted: dict | None = None  # the synthetic cohort's planted truth
    coverage: dict = field(default_factory=dict)  # statistic -> systems whose CI holds the planted value
    patients: dict = field(default_factory=dict)  # system -> patients its labelled instructions come from
    within_patient: pd.DataFrame | None = None  # clinicians.patient_correlation, with a patient bootstrap

    @classmethod
    def from_labels(cls, labels: pd.DataFrame, *, bootstrap: Bootstrap = BOOTSTRAP, planted: dict | None = None):
        from ..synthetic.labels import planted_coverage

        t3 = table3(labels, bootstrap=bootstrap)
        beside, coverage = paper.beside_table3(t3), {}
        if planted:
            beside, coverage = planted_coverage(beside, planted)
        beside.attrs.update(t3.attrs)
        patients = labels.groupby("system").person_id.nunique().to_dict() if "person_id" in labels else {}
        within = patient_correlation(labels) if bootstrap.unit == "patient" and "person_id" in labels else None
        return cls(beside, bootstrap, planted, coverage, patients, within)

    def patient_note(self) -> str:
        """Why a patient-level interval can be narrower than an instruction-level one, in numbers."""
        w = self.within_patient
        iccs = ", ".join(f"{paper.MODEL_LABELS.get(r.system, r.system)} {r.icc_net_wins:+.2f}" for r in w.itertuples())
        out = (
            f"patient bootstrap over {int(w.patients.max())} patients (about {w.instructions_per_patient.mean():.1f} "
            f"instructions each): a system whose instructions offset each other within a patient (negative "
            f"intra-patient correlation of net wins: {iccs}) gets a narrower interval than by instruction "
            "(design effect about 1 + (m - 1) ICC), one whose instructions move together a wider one; with this "
            "few patients the interval's width is itself uncertain"
        )
        if self.planted is not None:
            out += "; the synthetic labels carry no patient effect, so a narrower interval here is chance"
        return out

    def notes(self) -> list[str]:
        """What a reader needs beside the table: how its CIs were made, what the input lacked, and
        on the synthetic cohort how many CIs hold the planted values."""
        settings = self.table.attrs["settings"]
        out = [f"CIs: {settings['ci']}; raters combined by '{settings['combine']}'"]
        out += [str(p) for p in self.table.attrs["problems"]]
        if self.bootstrap.unit == "patient" and self.within_patient is not None and len(self.within_patient):
            out.append(self.patient_note())
        if self.coverage:
            held = ", ".join(f"{k} {v}/{len(self.table)}" for k, v in self.coverage.items())
            out.append(f"planted values inside our 95% CIs: {held}")
        return out

    def findings(self) -> list[dict]:
        """Each system's correct % (what the index leads with) and win rate with its CI and its n,
        beside the paper's (planted on the synthetic cohort: its labels are drawn from a planted model)."""
        published = paper.TABLE3.set_index("system")
        out = []
        for statistic, title, unit, digits, lead in (
            ("correct_pct", "correct %", "%", 1, True),
            ("win_rate", "win rate", "", 3, False),
        ):
            ci = "correct" if statistic == "correct_pct" else statistic
            for r in self.table.itertuples():
                theirs = published[statistic].get(r.system)
                out.append(
                    {
                        "name": f"Table 3 {title}: {paper.MODEL_LABELS.get(r.system, r.system)}",
                        "value": getattr(r, statistic),
                        "ci": (getattr(r, f"{ci}_ci_low"), getattr(r, f"{ci}_ci_high")),
                        "unit": unit,
                        "compare": f"paper: {theirs:.{digits}f}{unit}" if theirs is not None else "",
                        "planted": self.planted is not None,
                        "n_instructions": int(r.n),
                        "n_patients": self.patients.get(r.system) if self.bootstrap.unit == "patient" else None,
                        "lead": lead,
                    }
                )
        return out

    def plot(self):
        from .. import plots

        expected = self.planted["expected_table3"] if self.planted else None
        return plots.table3_headline(self.table, planted=expected, synthetic=self.planted is not None)


@dataclass
class Figure2Display:
    """The clinicians' head-to-head win shares (Figure 2) beside the paper's, and the text's two
    claims with CIs."""

    table: pd.DataFrame  # our win shares, row system over column system
    claims: pd.DataFrame

    @classmethod
    def from_labels(cls, labels: pd.DataFrame, *, bootstrap: Bootstrap = BOOTSTRAP):
        share = win_matrix(labels, systems=paper.in_paper_order(labels.system))
        columns = ["row system", "column system", "ours", "ci_low", "ci_high", "paper"]
        rows = [
            (a, b, share.loc[a, b], *head_to_head_ci(labels, a, b, bootstrap=bootstrap), claim)
            for (a, b), claim in paper.FIGURE2_CLAIMS.items()
            if {a, b} <= set(share.index)
        ]
        return cls(share, pd.DataFrame(rows, columns=columns))

    def plot(self):
        from .. import plots

        return plots.win_matrices(self.table, paper.FIGURE2, titles=("This data", "Paper (Figure 2)"))


@dataclass
class ContextLossDisplay:
    """What GPT-4 loses from a 32k to a 2k context: the paired difference in correct % with McNemar's
    test and its CI, beside the paper's gap."""

    result: object  # clinicians.mcnemar's result
    pair: tuple[str, str]
    synthetic: bool = False

    LONG, SHORT = "gpt4_32k", "gpt4_2k"

    @classmethod
    def from_labels(cls, labels: pd.DataFrame, *, synthetic: bool = False):
        if not {cls.LONG, cls.SHORT} <= set(labels.system):
            return cls(None, (cls.LONG, cls.SHORT), synthetic)
        return cls(mcnemar(labels, cls.LONG, cls.SHORT), (cls.LONG, cls.SHORT), synthetic)

    @property
    def paper_gap(self) -> float:
        return paper.correct_pct_gap(*self.pair)

    def findings(self) -> list[dict]:
        r = self.result
        if r is None:
            return []
        return [
            {
                "name": "correct % lost from 32k to 2k context (GPT-4)",
                "value": r.diff_pct,
                "ci": (r.ci_low, r.ci_high),
                "unit": "points",
                "compare": f"paper: {self.paper_gap} points; McNemar p = {r.p_value:.3g} (Wald interval)",
                "planted": self.synthetic,
                "n_instructions": int(r.n),
                "null": 0.0,
                "about": "a difference",
            }
        ]


@dataclass
class BreakdownDisplay:
    """Correct % per system within groups of instructions (category, EHR length band, a patient's
    demographics), each cell with its bootstrap CI and its counts; groups in a reader's order."""

    table: pd.DataFrame  # clinicians.breakdown's
    by: str  # what the groups are, as the axis and the table say it ("instruction category")
    order: list

    @classmethod
    def from_labels(
        cls,
        labels: pd.DataFrame,
        groups: pd.Series,
        *,
        by: str,
        order=None,
        bootstrap: Bootstrap = BOOTSTRAP,
        min_cell: int = 0,
    ):
        """`groups` maps instruction_id to a group; `order` (default: sorted, "unknown" last) is
        the order the groups are shown in (EHR length bands short to long)."""
        from .clinicians import breakdown

        table = breakdown(labels, groups, bootstrap=bootstrap, min_cell=min_cell)
        present = list(dict.fromkeys(table.group))
        known = [g for g in (order or sorted(g for g in present if g != "unknown")) if g in present]
        return cls(table, by, known + [g for g in present if g not in known])

    def _pivot(self, values) -> pd.DataFrame:
        systems = paper.in_paper_order(self.table.system)
        wide = self.table.pivot(index="group", columns="system", values=values)
        return wide.reindex(index=self.order, columns=systems).rename_axis(self.by).rename_axis(None, axis=1)

    def counts(self) -> pd.DataFrame:
        """Instructions per group and system (and patients per group)."""
        out = self._pivot("n_instructions")
        out["patients"] = self.table.groupby("group").n_patients.max().reindex(self.order)
        return out

    def rates(self) -> pd.DataFrame:
        """Correct % with its 95% CI per group and system ("47.4 (38.1–56.2)"; empty where a cell is
        too thin to show), and the patients of each group."""
        estimates = self.table[["correct_pct", "correct_ci_low", "correct_ci_high"]].to_numpy()
        cells = self.table.assign(cell=[_pct_with_ci(*r) for r in estimates])
        out = cells.pivot(index="group", columns="system", values="cell")
        out = out.reindex(index=self.order, columns=paper.in_paper_order(self.table.system))
        out = out.rename_axis(self.by).rename_axis(None, axis=1)
        out["patients"] = self.table.groupby("group").n_patients.max().reindex(self.order)
        return out

    def plot(self, *, title: str | None = None):
        from .. import plots

        title = title or f"Correct % by {self.by}"
        return plots.breakdown_bars(self.table, title=title, by=self.by, order=self.order)


def _pct_with_ci(value: float, low: float, high: float):
    if pd.isna(value):
        return None  # a cell too thin to show: the page says why
    return f"{value:.1f}" if pd.isna(low) else f"{value:.1f} ({low:.1f}–{high:.1f})"
