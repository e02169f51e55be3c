"""Which answers clinicians should label: label plans and the estimators that match them.

A plan picks `budget` of a system's N judged answers for clinicians to label, each with its
inclusion probability π (Σπ = budget), by one of three designs:

- ``uniform``: every answer alike (π = k/N); estimated by PPI++ as `place` always has.
- ``stratified``: strata (instruction category, or EHR length) with Neyman allocation, n_h ∝ N_h σ_h,
  σ_h the judge's expected residual sd in the stratum (√mean p(1−p)); estimated by stratified PPI++
  (Fisch et al., NeurIPS 2024), λ per stratum where it has labels enough, else pooled.
- ``active``: π ∝ √(p(1−p)) from the judge's p(correct) (Zrnic and Candès, ICML 2024), mixed with
  uniform at a floor (`floor` of the budget spread evenly) so that a miscalibrated judge costs
  little and no π is tiny; drawn with fixed size by Pareto πps sampling (Rosén 1997); estimated by
  the inverse-probability-weighted PPI estimate with a tuned λ and Hájek's variance for fixed-size
  designs.

Each estimate comes beside the labels alone under the same design (λ = 0). The estimand is the
system's correct rate over its N answers (the judge has seen all of them); intervals use Student's t
with a small-sample guard (two pseudo-labels at 1 and two at 0 in the variance, as the suite's
PPI++) and are clipped to [0, 1]. Coverage is shown by simulation (`simulate_designs`,
benchmarks/bench_labels.py, tests/evaluation/test_label_plans.py).

The jury's effective size and a judge's label-saving ceiling live here too: what a judge or a
jury can save, stated beside the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .estimates import judge_correct_table, labels_only_ci, ppi_mean_ci

DESIGNS = ("uniform", "stratified", "active")
# The share of an active plan's budget spread uniformly: 0.5 keeps coverage near nominal even for an
# overconfident judge (p near 0 or 1 where it is wrong) at a small cost in width for a good one.
ACTIVE_FLOOR = 0.5
MIN_PER_STRATUM = 2  # a stratum's variance needs two labels
PSEUDO = 8  # units' worth of the pooled spread in each stratum's (stratified PPI++)
PLAN_COLUMNS = ["instruction_id", "system", "pi", "stratum", "judge_p", "question", "answer"]


# ------------------------------------------------------------------ inclusion probabilities


def _capped(weights: np.ndarray, budget: int) -> np.ndarray:
    """π ∝ weights with Σπ = budget and no π above 1 (the excess shared by the rest)."""
    pi, fixed = np.zeros(len(weights)), np.zeros(len(weights), bool)
    for _ in range(len(weights)):
        free = ~fixed
        left = budget - fixed.sum()
        pi[free] = left * weights[free] / weights[free].sum()
        over = free & (pi >= 1)
        if not over.any():
            break
        fixed |= over
        pi[fixed] = 1.0
    return pi


def neyman_allocation(strata: np.ndarray, sd: np.ndarray, budget: int) -> dict:
    """Labels per stratum, n_h ∝ N_h σ_h (Neyman), at least `MIN_PER_STRATUM` (where the stratum
    has that many answers) and at most N_h, summing to `budget`."""
    names, counts = np.unique(strata, return_counts=True)
    sigma = np.array([max(float(np.mean(sd[strata == h])), 1e-3) for h in names])
    floor = np.minimum(counts, MIN_PER_STRATUM)
    if budget < floor.sum():
        raise ValueError(f"a budget of {budget} cannot give each of {len(names)} strata {MIN_PER_STRATUM} labels")
    n = floor.astype(float)
    extra = budget - floor.sum()
    want = counts * sigma
    for _ in range(len(names) + 1):  # share the rest by N_h σ_h, capped at N_h
        room = counts - n
        share = np.where(room > 0, want, 0.0)
        if extra <= 1e-9 or share.sum() == 0:
            break
        add = np.minimum(room, extra * share / share.sum())
        n += add
        extra = budget - n.sum()
    whole = np.floor(n).astype(int)  # largest remainders, so the labels add up to the budget
    for k in np.argsort(-(n - whole))[: budget - whole.sum()]:
        whole[k] += 1
    return dict(zip(names, whole))


def inclusion_probabilities(
    judge_p, budget: int, *, design: str, strata=None, floor: float = ACTIVE_FLOOR
) -> np.ndarray:
    """Each answer's inclusion probability under `design` (Σπ = `budget`): uniform k/N; active
    √(p(1−p)) mixed with uniform at `floor`; stratified n_h/N_h by Neyman over `strata`."""
    p = np.clip(np.asarray(judge_p, float), 0.0, 1.0)
    n = len(p)
    if design not in DESIGNS:
        raise ValueError(f"design {design!r}: one of {', '.join(DESIGNS)}")
    if not 0 < budget <= n:
        raise ValueError(f"a budget of {budget} labels for {n} answers: give 1 to {n}")
    if design == "uniform":
        return np.full(n, budget / n)
    if design == "active":
        s = np.sqrt(p * (1 - p))
        s = s / s.sum() if s.sum() > 0 else np.full(n, 1 / n)
        return _capped((1 - floor) * s + floor / n, budget)
    if strata is None:
        raise ValueError("the stratified design needs strata (category or ehr_length)")
    strata = np.asarray(strata, dtype=object)
    alloc = neyman_allocation(strata, np.sqrt(p * (1 - p)), budget)
    sizes = pd.Series(strata).value_counts()
    return np.array([alloc[h] / sizes[h] for h in strata])


def draw_sample(pi: np.ndarray, *, design: str, strata=None, seed: int = 0) -> np.ndarray:
    """Which answers are labelled (a boolean mask of exactly round(Σπ)): simple random sampling
    (within each stratum for `stratified`), Pareto πps sampling for `active`."""
    rng = np.random.default_rng(seed)
    pi = np.asarray(pi, float)
    picked = np.zeros(len(pi), bool)
    if design == "active":
        u = rng.random(len(pi))
        with np.errstate(divide="ignore"):
            key = (u / (1 - u)) / (pi / (1 - np.minimum(pi, 1 - 1e-12)))
        picked[np.argsort(key)[: int(round(pi.sum()))]] = True
        return picked
    groups = np.zeros(len(pi), int) if strata is None or design == "uniform" else pd.factorize(np.asarray(strata))[0]
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        take = int(round(pi[members].sum()))
        picked[rng.choice(members, take, replace=False)] = True
    return picked


# ------------------------------------------------------------------ estimators for each design


def _t(alpha: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(1 - alpha / 2, max(df, 1.0)))


def ipw_ppi_ci(y, f_labelled, pi, f_all, *, alpha: float = 0.05, lam: float | None = None) -> dict:
    """The inverse-probability-weighted PPI estimate of a mean (active inference) from labels `y`
    of the sampled answers, the judge's `f_labelled` on them, their inclusion probabilities `pi`
    and the judge on all N answers (`f_all`): θ = λ mean(f) + the weighted mean of (y − λ f) over
    the labels, weights 1/π (Hájek's ratio form of the inverse-probability weighting, which stays
    stable where a few labels carry large weights); λ tuned to the smallest variance (clipped to
    [0, 1]; `lam` fixes it, 0 for the labels alone). Its variance by linearization with Hájek's
    approximation for fixed-size designs, Student's t on k − 1 degrees of freedom, two
    pseudo-labels at 1 and two at 0 in the variance (never zero width), clipped to [0, 1]."""
    y, f, pi, f_all = (np.asarray(a, float) for a in (y, f_labelled, pi, f_all))
    k = len(y)
    w = 1 / pi
    if lam is None:  # the λ that minimizes the weighted spread of the residuals
        yc = y - (w * y).sum() / w.sum()
        fc = f - (w * f).sum() / w.sum()
        denominator = (w * (1 - pi) * w * fc**2).sum()
        lam = float(np.clip((w * (1 - pi) * w * yc * fc).sum() / denominator, 0, 1)) if denominator > 0 else 0.0
    r = y - lam * f
    level = (w * r).sum() / w.sum()
    estimate = lam * f_all.mean() + level
    # The variance with pseudo-labels (1, 1, 0, 0) at the sample's mean judge and mean π; the
    # spread is read from k + 4 units and counted for k (uniform π: the SRS's (1 − k/N) s² / k).
    r2 = np.concatenate([r - level, 1 - lam * f.mean() - level + np.zeros(2), -lam * f.mean() - level + np.zeros(2)])
    pi2 = np.concatenate([pi, np.full(4, pi.mean())])
    z, c = r2 / pi2, 1 - pi2
    centre = (c * z).sum() / c.sum() if c.sum() > 0 else 0.0
    n_hat = (1 / pi2).sum() * k / (k + 4)
    var = k / (k + 3) * (c * (z - centre) ** 2).sum() / n_hat**2
    half = _t(alpha, k - 1) * np.sqrt(var)
    return _clipped(estimate, half, lam=lam)


def _clipped(estimate: float, half: float, **extra) -> dict:
    low = float(np.clip(min(estimate - half, estimate), 0, 1))
    high = float(np.clip(max(estimate + half, estimate), 0, 1))
    return {"estimate": float(np.clip(estimate, 0, 1)), "ci_low": low, "ci_high": high, **extra}


def stratified_ppi_ci(y, f_labelled, strata_labelled, f_all, strata_all, *, alpha: float = 0.05, lam=None) -> dict:
    """Stratified PPI++ (Fisch et al. 2024): in each stratum h, θ_h = λ_h mean(f over its N_h) +
    mean over its labels of (y − λ_h f), λ_h tuned where the stratum has 10 labels or more (else
    the pooled λ); θ = Σ (N_h/N) θ_h, its variance Σ (N_h/N)² (1 − n_h/N_h) s_h²/n_h, each s_h²
    shrunk toward the pooled spread (all labels with two pseudo-labels at 1 and two at 0) by
    `PSEUDO` units' worth, Student's t with Satterthwaite's degrees of
    freedom. `lam` 0 gives the stratified labels-only estimate."""
    y, f = np.asarray(y, float), np.asarray(f_labelled, float)
    sl, f_all, sa = (
        np.asarray(strata_labelled, dtype=object),
        np.asarray(f_all, float),
        np.asarray(strata_all, dtype=object),
    )
    big_n = len(f_all)
    pooled = lam
    if pooled is None:
        cov = np.cov(y, f)[0, 1] if len(y) > 1 else 0.0
        pooled = float(np.clip(cov / np.var(f, ddof=1), 0, 1)) if len(y) > 1 and np.var(f, ddof=1) > 0 else 0.0
    estimate, var, dof_num, dof_den, lams = 0.0, 0.0, 0.0, 0.0, {}
    residuals = y - pooled * f
    pooled_spread = np.var(
        np.concatenate([residuals, 1 - pooled * f.mean() + np.zeros(2), -pooled * f.mean() + np.zeros(2)]), ddof=1
    )
    for h in pd.unique(sa):
        fh_all, mask = f_all[sa == h], sl == h
        yh, fh = y[mask], f[mask]
        n_h, big_nh, w = len(yh), len(fh_all), len(fh_all) / big_n
        if n_h == 0:  # no label in this stratum: the judge alone (said by the caller's counts)
            estimate += w * fh_all.mean()
            continue
        lam_h = pooled
        if lam is None and n_h >= 10 and np.var(fh, ddof=1) > 0:
            lam_h = float(np.clip(np.cov(yh, fh)[0, 1] / np.var(fh, ddof=1), 0, 1))
        lams[h] = lam_h
        estimate += w * (lam_h * fh_all.mean() + (yh - lam_h * fh).mean())
        r = yh - lam_h * fh
        # The stratum's spread shrunk toward the pooled one with its pseudo-labels (4 units' worth):
        # two labels give one degree of freedom, and all-agreeing labels no spread at all.
        s2 = ((n_h - 1) * (np.var(r, ddof=1) if n_h > 1 else 0.0) + PSEUDO * pooled_spread) / (n_h - 1 + PSEUDO)
        v_h = w**2 * max(1 - n_h / big_nh, 0.0) * s2 / n_h
        var += v_h
        dof_num += v_h
        dof_den += v_h**2 / (n_h - 1 + PSEUDO)
    dof = dof_num**2 / dof_den if dof_den > 0 else max(len(y) - 1, 1)
    return _clipped(estimate, _t(alpha, dof) * np.sqrt(var), lam=lams)


# ------------------------------------------------------------------ a plan


@dataclass(frozen=True)
class LabelPlan:
    """Which of a system's answers to send to clinicians: every judged answer with its inclusion
    probability, the judge's p(correct) and stratum, and whether it is in the plan (`rows`)."""

    design: str
    system: str
    judge: str
    budget: int
    seed: int
    strata: str | None
    floor: float
    population: pd.DataFrame = field(repr=False)

    @property
    def rows(self) -> pd.DataFrame:
        """The answers to label, in the order clinicians get them (shuffled with the seed)."""
        return self.population[self.population.selected][PLAN_COLUMNS].reset_index(drop=True)

    @property
    def header(self) -> dict:
        return {
            "design": self.design,
            "system": self.system,
            "judge": self.judge,
            "budget": self.budget,
            "seed": self.seed,
            "strata": self.strata,
            "floor": self.floor if self.design == "active" else None,
            "n_answers": len(self.population),
        }

    def to_tsv(self, path: str | Path) -> Path:
        """The plan as TSV: `# key: value` header lines (design, seed, budget, ...), then one row per
        answer to label; the judge's p for every answer (needed by the estimator) in a second file
        beside it, `<plan>.population.tsv`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = "".join(f"# {k}: {json.dumps(v)}\n" for k, v in self.header.items())
        path.write_text(head + self.rows.to_csv(sep="\t", index=False), encoding="utf-8")
        cols = ["instruction_id", "system", "pi", "stratum", "judge_p", "selected"]
        self.population[cols].to_csv(population_path(path), sep="\t", index=False)
        return path

    @classmethod
    def read(cls, path: str | Path) -> LabelPlan:
        """A plan written by `to_tsv` (and its population file)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such label plan")
        header = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.startswith("# "):
                break
            key, _, value = line[2:].partition(": ")
            try:
                header[key] = json.loads(value)
            except ValueError:
                raise ValueError(f"{path} line {n}: header {line!r} is not '# key: JSON value'") from None
        missing = {"design", "system", "judge", "budget", "seed"} - set(header)
        if missing:
            raise ValueError(f"{path}: not a label plan (its header lacks {', '.join(sorted(missing))})")
        pop_path = population_path(path)
        if not pop_path.is_file():
            raise FileNotFoundError(f"{pop_path}: the plan's population file is missing (written beside the plan)")
        pop = pd.read_csv(pop_path, sep="\t", dtype={"instruction_id": str, "system": str, "stratum": str})
        pop["selected"] = pop.selected.astype(bool)
        return cls(
            header["design"],
            header["system"],
            header["judge"],
            int(header["budget"]),
            int(header["seed"]),
            header.get("strata"),
            float(header.get("floor") or ACTIVE_FLOOR),
            pop,
        )

    def estimate(self, labels: pd.DataFrame, *, alpha: float = 0.05) -> dict:
        """The system's correct % from clinicians' labels of the planned answers with the judge on
        all of them, by the estimator that matches the design, beside the labels alone under the
        same design. A label of an answer not in the plan is an error naming it; planned answers
        left unlabelled are counted (`n_missing`)."""
        return plan_estimate(self, labels, alpha=alpha)


def population_path(plan_path: Path) -> Path:
    return plan_path.with_name(plan_path.name.removesuffix(".tsv") + ".population.tsv")


def judge_predictions(judgments: pd.DataFrame, *, judge: str, system: str) -> pd.DataFrame:
    """The judge's p(correct) of each of `system`'s answers (its probability-weighted verdict where
    it has one, else its verdict): instruction_id, judge_p."""
    v = judge_correct_table(judgments, judge)
    v = v[v.system == system]
    out = pd.DataFrame({"instruction_id": v.instruction_id.astype(str), "judge_p": v.pred})
    return out.dropna().reset_index(drop=True)


def plan_labels(
    judgments: pd.DataFrame,
    *,
    system: str,
    judge: str,
    budget: int,
    design: str = "active",
    strata: pd.Series | None = None,
    strata_name: str | None = None,
    seed: int = 0,
    floor: float = ACTIVE_FLOOR,
    answers: pd.DataFrame | None = None,
) -> LabelPlan:
    """A label plan for `system`'s answers that `judge` judged in `correct` mode: `budget` of
    them drawn by `design` (`strata`: instruction_id -> stratum, for `stratified`). `answers`
    (instruction_id, question, answer) fills in what clinicians read."""
    pop = judge_predictions(judgments, judge=judge, system=system)
    if not len(pop):
        raise ValueError(f"no correct-mode verdict of {system} by {judge}: judge its answers first (--mode correct)")
    pop["system"] = system
    pop["stratum"] = pop.instruction_id.map(strata).fillna("(none)").astype(str) if strata is not None else ""
    pi = inclusion_probabilities(pop.judge_p, budget, design=design, strata=pop.stratum, floor=floor)
    pop["pi"] = pi
    pop["selected"] = draw_sample(pi, design=design, strata=pop.stratum, seed=seed)
    text = answers.drop_duplicates("instruction_id").set_index("instruction_id") if answers is not None else None
    for col in ("question", "answer"):
        pop[col] = pop.instruction_id.map(text[col]) if text is not None and col in text.columns else ""
    order = np.random.default_rng(seed + 1).permutation(len(pop))  # clinicians see them in no telling order
    pop = pop.iloc[order].reset_index(drop=True)
    return LabelPlan(design, system, judge, int(budget), int(seed), strata_name, float(floor), pop)


def plan_estimate(plan: LabelPlan, labels: pd.DataFrame, *, alpha: float = 0.05) -> dict:
    """`LabelPlan.estimate`: the design's estimate with the labels alone beside it, in %."""
    mine = labels[labels.system == plan.system]
    planned = set(plan.population[plan.population.selected].instruction_id)
    stray = mine[~mine.instruction_id.isin(planned)]
    if len(stray):  # rows keep read_new_labels' index: row k is the file's line k + 2
        first = stray.index[0]
        raise ValueError(
            f"labels line {first + 2}: instruction {stray.instruction_id.iloc[0]} of {plan.system} is not in the"
            f" {plan.design} plan ({len(stray)} such rows): its estimate holds only for the plan's own draw"
        )
    pop = plan.population
    labelled = pop.merge(mine[["instruction_id", "binary_correct"]].dropna(), on="instruction_id")
    n_missing = len(planned) - len(labelled)
    out = {"design": plan.design, "n_labels": len(labelled), "n_missing": n_missing, "n_answers": len(pop)}
    if len(labelled) < 2:
        return {**out, "reason": "fewer than two labels of planned answers"}
    y, f = labelled.binary_correct.to_numpy(float), labelled.judge_p.to_numpy(float)
    f_all = pop.judge_p.to_numpy(float)
    if plan.design == "uniform":
        rest = pop[~pop.instruction_id.isin(labelled.instruction_id)].judge_p
        with_judge = ppi_mean_ci(y, f, rest, alpha=alpha, small_sample=True)
        alone = labels_only_ci(y, alpha=alpha, small_sample=True)
    elif plan.design == "stratified":
        s, s_all = labelled.stratum.to_numpy(), pop.stratum.to_numpy()
        with_judge = stratified_ppi_ci(y, f, s, f_all, s_all, alpha=alpha)
        alone = stratified_ppi_ci(y, f, s, f_all, s_all, alpha=alpha, lam=0.0)
    else:
        pi = labelled.pi.to_numpy(float)
        with_judge = ipw_ppi_ci(y, f, pi, f_all, alpha=alpha)
        alone = ipw_ppi_ci(y, f, pi, f_all, alpha=alpha, lam=0.0)
    for prefix, ci in (("plan", with_judge), ("plan_labels", alone)):
        out[f"{prefix}_correct_pct"] = 100 * ci["estimate"]
        out[f"{prefix}_correct_pct_ci_low"] = 100 * ci["ci_low"]
        out[f"{prefix}_correct_pct_ci_high"] = 100 * ci["ci_high"]
    return out


# ------------------------------------------------------------------ shown by simulation


def simulate_designs(
    y,
    judge_p,
    *,
    strata=None,
    ks=(20, 40, 80),
    designs=DESIGNS,
    n_draws: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
    floor: float = ACTIVE_FLOOR,
) -> pd.DataFrame:
    """For a system whose every label `y` is known and a judge's `judge_p` on the same answers:
    per design and k, the share of plans whose interval covers the correct rate of the N answers
    (the estimand) and the mean width (in % points), labels + judge and labels alone; each draw a
    fresh plan (seeded)."""
    y, p = np.asarray(y, float), np.asarray(judge_p, float)
    truth = y.mean()
    strata = np.asarray(strata if strata is not None else [""] * len(y), dtype=object)
    rng = np.random.default_rng(seed)
    rows = []
    for design in designs:
        for k in ks:
            if k >= len(y):
                continue
            pi = inclusion_probabilities(p, k, design=design, strata=strata, floor=floor)
            for _ in range(n_draws):
                pick = draw_sample(pi, design=design, strata=strata, seed=int(rng.integers(2**31)))
                if design == "uniform":
                    cis = {
                        "labels+judge": ppi_mean_ci(y[pick], p[pick], p[~pick], alpha=alpha, small_sample=True),
                        "labels": labels_only_ci(y[pick], alpha=alpha, small_sample=True),
                    }
                elif design == "stratified":
                    args = (y[pick], p[pick], strata[pick], p, strata)
                    cis = {
                        "labels+judge": stratified_ppi_ci(*args, alpha=alpha),
                        "labels": stratified_ppi_ci(*args, alpha=alpha, lam=0.0),
                    }
                else:
                    cis = {
                        "labels+judge": ipw_ppi_ci(y[pick], p[pick], pi[pick], p, alpha=alpha),
                        "labels": ipw_ppi_ci(y[pick], p[pick], pi[pick], p, alpha=alpha, lam=0.0),
                    }
                for method, ci in cis.items():
                    rows.append(
                        {
                            "design": design,
                            "k": k,
                            "method": method,
                            "covered": ci["ci_low"] <= truth <= ci["ci_high"],
                            "width": 100 * (ci["ci_high"] - ci["ci_low"]),
                        }
                    )
    d = pd.DataFrame(rows)
    out = d.groupby(["design", "k", "method"], sort=False).agg(
        coverage=("covered", "mean"), mean_width=("width", "mean")
    )
    out = out.reset_index()
    out.attrs["settings"] = {"n_draws": n_draws, "seed": seed, "alpha": alpha, "floor": floor, "n_answers": len(y)}
    return out


def expected_width(plan: LabelPlan, *, n_draws: int = 200, alpha: float = 0.05) -> float:
    """The plan's interval width (labels + judge, in % points) to expect if the judge's p(correct)
    is calibrated: labels drawn as Bernoulli(p) afresh in each of `n_draws` simulated plans."""
    pop = plan.population
    p = pop.judge_p.to_numpy(float)
    strata = pop.stratum.to_numpy(object)
    rng = np.random.default_rng(plan.seed)
    widths = []
    for _ in range(n_draws):
        y = (rng.random(len(p)) < p).astype(float)
        table = simulate_designs(
            y, p, strata=strata, ks=(plan.budget,), designs=(plan.design,), n_draws=1,
            seed=int(rng.integers(2**31)), alpha=alpha, floor=plan.floor,
        )  # fmt: skip
        widths.append(float(table[table.method == "labels+judge"].mean_width.iloc[0]))
    return float(np.mean(widths))


def planted_predictions(y, *, quality: str, seed: int = 0) -> np.ndarray:
    """A planted judge's p(correct) for answers whose labels `y` are known, of known quality:
    ``informative`` (p from Beta(6, 1.5) for a correct answer, Beta(1.5, 6) for a wrong one: a
    correlation with the labels near 0.9) or ``uninformative`` (p uniform on [0.25, 0.75], whatever
    the label)."""
    y = np.asarray(y, float)
    rng = np.random.default_rng(seed)
    if quality == "informative":
        return np.where(y == 1, rng.beta(6, 1.5, len(y)), rng.beta(1.5, 6, len(y)))
    if quality == "uninformative":
        return rng.uniform(0.25, 0.75, len(y))
    raise ValueError(f"quality {quality!r}: informative or uninformative")


# ------------------------------------------------------------------ what a judge or a jury can save


def jury_effective_size(judgments: pd.DataFrame, labels: pd.DataFrame, *, mode: str = "correct") -> dict:
    """A jury of k judges whose errors against the clinicians correlate by ρ̄ counts as
    n_eff = k / (1 + (k − 1) ρ̄) judges: errors are each judge's score (its p(correct) where it has
    one) minus the primary clinician's label, over the responses every judge scored validly; ρ̄ the
    mean pairwise Pearson correlation."""
    j = judgments[(judgments["mode"] == mode) & judgments.error.isna() & judgments.valid.astype(bool)]
    expected = j.expected_score if "expected_score" in j.columns else pd.Series(np.nan, index=j.index)
    score = pd.to_numeric(expected, errors="coerce").fillna(pd.to_numeric(j.score, errors="coerce"))
    wide = j.assign(s=score).pivot_table(index=["instruction_id", "system"], columns="judge", values="s").dropna()
    truth = labels.set_index(["instruction_id", "system"]).binary_correct.astype(float)
    wide = wide[wide.index.isin(truth.index)]
    k = wide.shape[1]
    if k < 2 or len(wide) < 3:
        return {"jury_judges": k, "jury_responses": len(wide), "jury_note": "needs two judges or more"}
    errors = wide.sub(truth.reindex(wide.index), axis=0)
    corr = errors.corr().to_numpy()
    rho = float(corr[np.triu_indices(k, 1)].mean())
    return {
        "jury_judges": k,
        "jury_responses": len(wide),
        "jury_mean_error_correlation": rho,
        "jury_effective_size": k / (1 + (k - 1) * rho),
    }


def label_saving_ceiling(judgments: pd.DataFrame, labels: pd.DataFrame, *, judge: str) -> dict:
    """The most a judge whose p(correct) correlates ρ with the clinicians' labels can save in PPI:
    n labels with it are worth at most n / (1 − ρ²) labels alone (the factor 1 / (1 − ρ²)). A judge
    no better than the judged model saves at most 2× (Dorner et al., ICLR 2025)."""
    v = judge_correct_table(judgments, judge)
    m = (
        labels[["instruction_id", "system", "binary_correct"]]
        .merge(v, on=["instruction_id", "system"])
        .dropna(subset=["binary_correct", "pred"])
    )
    if len(m) < 3 or m.pred.nunique() < 2 or m.binary_correct.nunique() < 2:
        return {"judge_label_correlation": np.nan, "labels_worth_factor": np.nan}
    rho = float(np.corrcoef(m.binary_correct.astype(float), m.pred.astype(float))[0, 1])
    return {"judge_label_correlation": rho, "labels_worth_factor": 1 / (1 - rho**2)}
