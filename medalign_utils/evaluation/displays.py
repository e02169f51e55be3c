"""Result objects for the clinician-label analyses, after scikit-learn's displays: computed once by a
`from_*` constructor, then read as `.table`, recorded as `.findings()` (keyword sets for
`reports.record_finding`) and drawn by `.plot()`. A notebook builds one and shows it; a test or a
second notebook reads the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .. import paper
from ..stats import BOOTSTRAP, Bootstrap
from .clinicians import head_to_head_ci, mcnemar, table3, win_matrix


@dataclass
class Table3Display:
    """The paper's Table 3 (correct %, win rate, mean rank with CIs) beside the paper's values,
    and on the synthetic cohort beside the planted truth with how many CIs hold it."""

    table: pd.DataFrame  # ours, beside the paper (and the planted values)
    bootstrap: Bootstrap
    planted: dict | None = None  # the synthetic cohort's planted truth
    coverage: dict = field(default_factory=dict)  # statistic -> systems whose CI holds the planted value

    @classmethod
    def from_labels(cls, labels: pd.DataFrame, *, bootstrap: Bootstrap = BOOTSTRAP, planted: dict | None = None):
        from ..synthetic.labels import planted_coverage

        t3 = table3(labels, bootstrap=bootstrap)
        beside, coverage = paper.beside_table3(t3), {}
        if planted:
            beside, coverage = planted_coverage(beside, planted)
        beside.attrs.update(t3.attrs)
        return cls(beside, bootstrap, planted, coverage)

    def notes(self) -> list[str]:
        """What a reader needs beside the table: how its CIs were made, what the input lacked, and
        on the synthetic cohort how many CIs hold the planted values."""
        settings = self.table.attrs["settings"]
        out = [f"CIs: {settings['ci']}; raters combined by '{settings['combine']}'"]
        out += [str(p) for p in self.table.attrs["problems"]]
        if self.coverage:
            held = ", ".join(f"{k} {v}/{len(self.table)}" for k, v in self.coverage.items())
            out.append(f"planted values inside our 95% CIs: {held}")
        return out

    def findings(self) -> list[dict]:
        """Each system's win rate with its CI, beside the paper's (planted on the synthetic cohort:
        its labels are drawn from a planted model)."""
        paper_wr = paper.TABLE3.set_index("system").win_rate
        return [
            {
                "name": f"Table 3 win rate: {paper.MODEL_LABELS.get(r.system, r.system)}",
                "value": r.win_rate,
                "ci": (r.win_rate_ci_low, r.win_rate_ci_high),
                "compare": f"paper: {paper_wr[r.system]:.3f}" if r.system in paper_wr else "",
                "planted": self.planted is not None,
            }
            for r in self.table.itertuples()
        ]

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
                "compare": f"paper: {self.paper_gap} points; McNemar p = {r.p_value:.3g}",
                "planted": self.synthetic,
            }
        ]
