"""The MedAlign paper's published numbers (Fleming et al., AAAI-24), for comparison in reports.

Source: the paper (arXiv 2308.14089), Tables 2-4 and Figure 2. The model keys are the suite's own
names for the six systems; the synthetic cohort uses them as `system`.
"""

from __future__ import annotations

import pandas as pd

MODELS = ["gpt4_32k_mr", "gpt4_32k", "gpt4_2k", "vicuna13b_2k", "vicuna7b_2k", "mpt7b_instruct_2k"]


def in_paper_order(systems) -> list[str]:
    """The paper's systems among those given, in its order (Table 3's rows); when none of them is
    given, the given systems sorted."""
    present = set(systems)
    return [m for m in MODELS if m in present] or sorted(present)


MODEL_LABELS = {
    "gpt4_32k_mr": "GPT-4 (MR, 32k)",
    "gpt4_32k": "GPT-4 (32k)",
    "gpt4_2k": "GPT-4 (2k)",
    "vicuna13b_2k": "Vicuna-13B (2k)",
    "vicuna7b_2k": "Vicuna-7B (2k)",
    "mpt7b_instruct_2k": "MPT-7B-Instruct (2k)",
}

TABLE3 = pd.DataFrame(
    {
        "system": MODELS,
        "context": [32768, 32768, 2048, 2048, 2048, 2048],
        "correct_pct": [65.0, 60.1, 51.8, 35.0, 33.3, 31.7],
        "win_rate": [0.658, 0.676, 0.598, 0.401, 0.398, 0.269],
        "mean_rank": [2.80, 2.75, 3.11, 3.92, 3.93, 4.49],
    }
)

# Figure 2: share of non-tied battles won by the row model over the column model.
FIGURE2 = pd.DataFrame(
    [
        [None, 0.48, 0.56, 0.73, 0.71, 0.82],
        [0.52, None, 0.58, 0.72, 0.74, 0.81],
        [0.44, 0.42, None, 0.67, 0.70, 0.76],
        [0.27, 0.28, 0.33, None, 0.50, 0.63],
        [0.29, 0.26, 0.30, 0.50, None, 0.64],
        [0.18, 0.19, 0.24, 0.37, 0.36, None],
    ],
    index=MODELS,
    columns=MODELS,
    dtype=float,
)

# Table 2: instruction categories (gold subset with reference responses / all 983).
TABLE2 = pd.DataFrame(
    {
        "category": [
            "Retrieve & Summarize",
            "Care Planning",
            "Calculation & Scoring",
            "Diagnosis Support",
            "Translation",
            "Other",
        ],
        "gold": [223, 22, 13, 4, 0, 41],
        "all": [667, 136, 70, 33, 2, 75],
    }
)

# Table 4: mean Kendall's tau between metric and clinician rankings.
TABLE4 = pd.DataFrame(
    {
        "metric": [
            "comet",
            "bertscore",
            "meteor",
            "chrf++",
            "google_bleu",
            "rougeL",
            "bleurt",
            "lens",
            "unieval",
            "inter_rater",
        ],
        "mean_tau": [0.37, 0.34, 0.32, 0.29, 0.29, 0.27, 0.25, 0.18, 0.20, 0.44],
        "ci_low": [0.33, 0.30, 0.28, 0.25, 0.25, 0.23, 0.21, 0.14, 0.15, 0.34],
        "ci_high": [0.41, 0.38, 0.36, 0.33, 0.33, 0.31, 0.30, 0.22, 0.24, 0.53],
    }
)

INTER_RATER_TAU = 0.44
# Instructions per submitter specialty (seven specialties; the paper gives the counts, largest first).
SPECIALTY_COUNTS = (492, 402, 320, 71, 14, 12, 3)
# Figure 2's claims in the text: GPT-4 (32k) wins 72% of non-tied battles over Vicuna-13B, 81% over MPT-7B.
FIGURE2_CLAIMS = {("gpt4_32k", "vicuna13b_2k"): 0.72, ("gpt4_32k", "mpt7b_instruct_2k"): 0.81}
DEDUP_ROUGE_L = 0.7  # instructions above this ROUGE-L to another were dropped (1,314 -> 983)
SHARE_FITTING_32K = 0.196  # of EHRs that fit entirely in 32k tokens (cl100k)
CONTEXT_LENGTHS = [2048, 4096, 8192, 16384, 32768, 65536, 131072]
N_INSTRUCTIONS = 983
N_GOLD = 303
N_PATIENTS = 276
GENERATION_RESERVE = 256


def correct_pct_gap(a: str, b: str) -> float:
    """The paper's correct % of system `a` minus that of `b` (GPT-4 32k vs 2k: 8.3 points)."""
    pct = TABLE3.set_index("system").correct_pct
    return round(float(pct[a] - pct[b]), 1)


def best_metric() -> tuple[str, float]:
    """The paper's best automated metric in Table 4 and its tau (COMET, 0.37)."""
    metrics = TABLE4[TABLE4.metric != "inter_rater"].sort_values("mean_tau", ascending=False)
    return str(metrics.metric.iloc[0]), float(metrics.mean_tau.iloc[0])


def table4_compare_text() -> str:
    """What a Table 4 finding is compared with: the paper's best metric and its inter-rater tau."""
    name, tau = best_metric()
    return f"paper: best metric {name.upper()} {tau:.2f}, inter-rater {INTER_RATER_TAU:.2f}"


def beside_table3(table3: pd.DataFrame) -> pd.DataFrame:
    """Our Table 3 with the paper's correct %, win rate and mean rank beside each system."""
    ours = TABLE3[["system", "correct_pct", "win_rate", "mean_rank"]].add_prefix("paper_")
    return table3.merge(ours, left_on="system", right_on="paper_system", how="left").drop(columns="paper_system")


def beside_table4(table4: pd.DataFrame) -> pd.DataFrame:
    """Our Table 4 with the paper's tau and CI beside each metric."""
    theirs = TABLE4.rename(columns={"mean_tau": "paper_tau", "ci_low": "paper_ci_low", "ci_high": "paper_ci_high"})
    return table4.merge(theirs, on="metric", how="left")
