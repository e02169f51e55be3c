"""LLM judges of MedAlign responses, measured against the release's own clinician labels.

Three modes, each a prompt template file in `templates/`:

* ``rubric``: accuracy, completeness and clarity, integers 1-5, and a one-line rationale, as one JSON
  object with exactly those keys (MedHELM's criteria); the score is the mean of the three;
* ``correct``: the paper's binary label, ``{"correct": true|false, "rationale": ...}``;
* ``pairwise``: A, B or tie between two responses to one instruction. Every pair is judged in both
  orders; a verdict that flips with the order counts as a tie, and position bias is reported.

The judge sees the instruction, the EHR fitted by the context engine into its own tokenizer and
budget (any registered strategy, or ``none``), the clinician reference (the primary reviewer's)
and the response(s). Only the judge's own output is parsed, and of several JSON objects in it the
last complete one counts (a score planted in the answer under evaluation is never read: helm#4344);
a missing key or a value out of range makes the verdict invalid, which is asked again a set number
of times and then recorded as invalid: counted and reported, never dropped or defaulted.

Judges are the generation backends (a local Hugging Face model, or OpenAI-compatible endpoints
under the data guard); several judges form a jury. Judgments go to JSONL with the generation
runner's guarantees (one writer, SIGKILL loses at most what was in flight, no duplicates), keyed by
judge, mode, instruction, system(s), order and prompt hash.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .context import TEMPLATES, PromptTemplate, render_fitted
from .generation.backends import Backend
from .generation.runner import ResultStore, prompt_hash, read_results
from .release import primary_reviewer_rows

MODES = ("rubric", "correct", "pairwise")
RUBRIC_KEYS = ("accuracy", "completeness", "clarity")
VERDICT_KEYS = {
    "rubric": {*RUBRIC_KEYS, "rationale"},
    "correct": {"correct", "rationale"},
    "pairwise": {"winner", "rationale"},
}
KEY_FIELDS = ("judge", "mode", "instruction_id", "systems", "order", "prompt_hash")


def judge_template(mode: str) -> PromptTemplate:
    if mode not in MODES:
        raise ValueError(f"judge mode must be one of {', '.join(MODES)}, not {mode!r}")
    return PromptTemplate.from_file(TEMPLATES / f"judge_{mode}.txt")


# ------------------------------------------------------------------ parsing verdicts


def json_objects(text: str) -> list[dict]:
    """Every complete JSON object in a text, in order (braces inside strings are respected)."""
    out, depth, start, in_str, esc = [], 0, None, False, False
    for i, ch in enumerate(text or ""):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    obj = json.loads(text[start : i + 1])
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
    return out


def parse_verdict(mode: str, output: str) -> tuple[dict | None, str | None]:
    """(verdict, None) when the judge's output ends in a valid verdict, else (None, why). Only the
    last complete JSON object counts; its keys must be exactly the mode's, its values in range."""
    objects = json_objects(output)
    if not objects:
        return None, "no JSON object in the judge's output"
    v = objects[-1]
    keys = set(v)
    if keys != VERDICT_KEYS[mode]:
        missing, extra = VERDICT_KEYS[mode] - keys, keys - VERDICT_KEYS[mode]
        return None, "keys " + "; ".join(
            x
            for x in (f"missing {sorted(missing)}" if missing else "", f"unexpected {sorted(extra)}" if extra else "")
            if x
        )
    if not isinstance(v["rationale"], str):
        return None, "rationale is not text"
    if mode == "rubric":
        for k in RUBRIC_KEYS:
            if isinstance(v[k], bool) or not isinstance(v[k], int) or not 1 <= v[k] <= 5:
                return None, f"{k} {v[k]!r} is not an integer from 1 to 5"
    elif mode == "correct":
        if not isinstance(v["correct"], bool):
            return None, f"correct {v['correct']!r} is not true or false"
    elif v["winner"] not in ("A", "B", "tie"):
        return None, f"winner {v['winner']!r} is not A, B or tie"
    return v, None


def verdict_score(mode: str, verdict: dict) -> float:
    """The number a verdict stands for: the rubric's mean of three, 1/0 for correct."""
    if mode == "rubric":
        return float(np.mean([verdict[k] for k in RUBRIC_KEYS]))
    if mode == "correct":
        return float(verdict["correct"])
    raise ValueError("a pairwise verdict has no score of its own")


# ------------------------------------------------------------------ judges and what they judge


@dataclass
class Judge:
    """One juror: a backend, the tokenizer and budget its prompts are fitted to, and its settings.
    `family` names the judged systems it is related to (for the self-preference check); prices are
    per 1,000 prompt and completion tokens (for the cost table)."""

    name: str
    backend: Backend
    tokenizer: object = None  # a tokenization.Tokenizer; None: no EHR context
    context_length: int = 4096
    strategy: str = "recent"  # any of context.STRATEGIES, or "none"
    reserve: int = 128  # tokens kept for the verdict
    retries: int = 2  # times an invalid verdict is asked again
    use_chat_template: bool = True
    family: str | None = None
    price_prompt_per_1k: float = 0.0
    price_completion_per_1k: float = 0.0

    def describe(self) -> dict:
        return {
            "judge": self.name,
            **self.backend.describe(),
            "settings": self.backend.settings.to_dict() if self.backend.settings else None,
            "context_length": self.context_length,
            "strategy": self.strategy,
            "tokenizer": getattr(self.tokenizer, "name", None),
            "retries": self.retries,
        }


def response_items(release, instructions=None, systems=None) -> pd.DataFrame:
    """One row per reviewed response (instruction x system): instruction_id, person_id, question,
    reference (the primary reviewer's), system, response."""
    resp = release.model_responses.drop_duplicates(["instruction_id", "model_name"])
    if instructions is not None:
        resp = resp[resp.instruction_id.isin(instructions)]
    if systems is not None:
        resp = resp[resp.model_name.isin(systems)]
    return _with_references(release, resp.rename(columns={"model_name": "system", "model_response": "response"}))


def _with_references(release, items: pd.DataFrame) -> pd.DataFrame:
    refs = primary_reviewer_rows(release.references, ("clinician_response",)).drop_duplicates("instruction_id")
    ref = refs.set_index("instruction_id").clinician_response if len(refs) else pd.Series(dtype=object)
    q = release.instructions.set_index("instruction_id").question
    out = items.assign(
        question=items.instruction_id.map(q).fillna(""),
        reference=items.instruction_id.map(ref).fillna("(no reference answer)"),
        person_id=items.instruction_id.map(release.instructions.set_index("instruction_id").person_id),
    )
    return out.reset_index(drop=True)


def pairwise_items(items: pd.DataFrame, pairs: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Both orders of every pair of systems that answered the same instruction (or of `pairs`):
    instruction_id, person_id, question, reference, systems ("a|b"), order ("AB" or "BA"),
    response_a, response_b (what the judge sees first and second)."""
    rows = []
    for iid, part in items.groupby("instruction_id", sort=True):
        by = dict(zip(part.system, part.response))
        names = sorted(by)
        wanted = pairs or [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        first = part.iloc[0]
        for a, b in wanted:
            if a not in by or b not in by:
                continue
            for order, (x, y) in (("AB", (a, b)), ("BA", (b, a))):
                rows.append(
                    {
                        "instruction_id": iid,
                        "person_id": first.person_id,
                        "question": first.question,
                        "reference": first.reference,
                        "systems": f"{a}|{b}",
                        "order": order,
                        "response_a": by[x],
                        "response_b": by[y],
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ running a judge


def judge_prompts(judge: Judge, mode: str, items: pd.DataFrame, release) -> list[str]:
    """The judge's prompt for each item, the EHR fitted into its context (or left out)."""
    template = judge_template(mode)
    prompts = []
    for row in items.itertuples(index=False):
        fields = {"question": row.question, "reference": row.reference}
        if mode == "pairwise":
            fields.update(response_a=row.response_a, response_b=row.response_b)
        else:
            fields["response"] = row.response
        prompts.append(
            render_fitted(
                judge.tokenizer,
                release,
                row.person_id,
                template,
                fields,
                judge.context_length,
                judge.reserve,
                judge.strategy,
                judge.use_chat_template,
            )
        )
    return prompts


def run_judgments(
    judge: Judge, mode: str, items: pd.DataFrame, release, out_path: str | Path, progress: bool = True
) -> dict:
    """Judge every item not yet in `out_path`; returns counts (judgments, invalid, failed, tokens)."""
    from tqdm import tqdm

    items = items.copy()
    if "systems" not in items.columns:
        items["systems"] = items.system
    if "order" not in items.columns:
        items["order"] = ""
    items["prompt"] = judge_prompts(judge, mode, items, release)
    items["prompt_hash"] = items.prompt.map(prompt_hash)
    items["judge"], items["mode"] = judge.name, mode
    stats = {"judgments": 0, "invalid": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}
    identity = judge.describe()
    with ResultStore(out_path, KEY_FIELDS) as store:
        todo = items[~items.apply(store.key, axis=1).isin(store.done)]
        stats["done_before"] = len(items) - len(todo)
        size = max(1, judge.backend.batch_size)
        bar = tqdm(total=len(todo), desc=f"judging ({judge.name}, {mode})", unit="judgment", disable=not progress)
        t0 = time.perf_counter()
        for start in range(0, len(todo), size):
            chunk = todo.iloc[start : start + size]
            records = _judge_chunk(judge, mode, chunk, identity)
            store.append(records)
            for r in records:
                stats["judgments"] += r["error"] is None
                stats["failed"] += r["error"] is not None
                stats["invalid"] += r["error"] is None and not r["valid"]
                stats["prompt_tokens"] += r["prompt_tokens"] or 0
                stats["completion_tokens"] += r["completion_tokens"] or 0
            bar.update(len(chunk))
        bar.close()
        stats["seconds"] = time.perf_counter() - t0
    return stats


def _judge_chunk(judge: Judge, mode: str, chunk: pd.DataFrame, identity: dict) -> list[dict]:
    """Ask, parse, and ask again (up to `judge.retries` times) the items whose verdict is invalid."""
    n = len(chunk)
    prompts = chunk.prompt.tolist()
    verdicts: list[dict | None] = [None] * n
    reasons: list[str | None] = [None] * n
    outputs: list[str] = [""] * n
    errors: list[str | None] = [None] * n
    attempts = [0] * n
    usage = np.zeros((n, 2))
    seconds = np.zeros(n)
    pending = list(range(n))
    for _ in range(judge.retries + 1):
        if not pending:
            break
        answers = judge.backend.generate([prompts[i] for i in pending])
        still = []
        for i, ans in zip(pending, answers):
            attempts[i] += 1
            usage[i] += (ans.prompt_tokens or 0, ans.new_tokens or 0)
            seconds[i] += ans.seconds
            if ans.error:
                errors[i] = ans.error
                continue  # a failed request is retried on the next run, not here
            errors[i], outputs[i] = None, ans.text
            verdicts[i], reasons[i] = parse_verdict(mode, ans.text)
            if verdicts[i] is None:
                still.append(i)
        pending = still
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    records = []
    for i, row in enumerate(chunk.itertuples(index=False)):
        v = verdicts[i]
        rec = {k: getattr(row, k) for k in KEY_FIELDS}
        rec.update(
            valid=v is not None,
            invalid_reason=None if v is not None or errors[i] else reasons[i],
            verdict=v,
            score=verdict_score(mode, v) if v is not None and mode != "pairwise" else None,
            output=outputs[i],
            error=errors[i],
            attempts=attempts[i],
            prompt_tokens=int(usage[i, 0]),
            completion_tokens=int(usage[i, 1]),
            seconds=round(float(seconds[i]), 4),
            cost=usage[i, 0] / 1000 * judge.price_prompt_per_1k + usage[i, 1] / 1000 * judge.price_completion_per_1k,
            judge_identity=identity,
            finished=finished,
        )
        records.append(rec)
    return records


def read_judgments(paths) -> pd.DataFrame:
    """Judgments from one or more JSONL files, one per key (the latest)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    frames = [read_results(p, KEY_FIELDS) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY_FIELDS, "valid", "score"])


# ------------------------------------------------------------------ scores and the jury


def judge_scores(judgments: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Each valid verdict's score: instruction_id, model_name, judge, score."""
    j = judgments[(judgments["mode"] == mode) & judgments.error.isna() & judgments.valid.astype(bool)]
    j = j.assign(model_name=j.systems, score=pd.to_numeric(j.score, errors="coerce"))
    return j[["instruction_id", "model_name", "judge", "score"]].reset_index(drop=True)


def jury_scores(judgments: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The jury's score per response: the mean over its valid judges, with how many there were.
    Every juror's own score stays in `judge_scores`."""
    s = judge_scores(judgments, mode)
    return s.groupby(["instruction_id", "model_name"]).score.agg(score="mean", n_judges="size").reset_index()


def as_metric_scores(judgments: pd.DataFrame, mode: str, jury: bool = True) -> pd.DataFrame:
    """Judge scores in the shape of metric scores (instruction_id, model_name, metric, score), one
    "metric" per judge (`judge:<name>:<mode>`) and, with several judges, `jury:<mode>`: rows for
    `correlation.table4` beside the automated metrics."""
    s = judge_scores(judgments, mode)
    rows = [s.assign(metric="judge:" + s.judge + f":{mode}")[["instruction_id", "model_name", "metric", "score"]]]
    if jury and s.judge.nunique() > 1:
        rows.append(
            jury_scores(judgments, mode).assign(metric=f"jury:{mode}")[
                ["instruction_id", "model_name", "metric", "score"]
            ]
        )
    return pd.concat(rows, ignore_index=True)


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
    """Per judge and mode: prompt and completion tokens, and cost at the configured prices."""
    return (
        judgments.groupby(["judge", "mode"])
        .agg(judgments=("valid", "size"), prompt_tokens=("prompt_tokens", "sum"),
             completion_tokens=("completion_tokens", "sum"), cost=("cost", "sum"), seconds=("seconds", "sum"))
        .reset_index()
    )  # fmt: skip


# ------------------------------------------------------------------ agreement with the clinicians


def correct_agreement(judgments: pd.DataFrame, labels: pd.DataFrame, judge: str | None = None) -> dict:
    """The `correct` verdicts against the clinicians' `binary_correct` on the same responses:
    accuracy, Cohen's kappa, and per system the correct % by the judge beside the clinicians'."""
    from .human_eval import cohens_kappa

    s = judge_scores(judgments, "correct")
    if judge:
        s = s[s.judge == judge]
    m = s.merge(labels[["instruction_id", "model_name", "binary_correct"]], on=["instruction_id", "model_name"])
    m = m.dropna(subset=["binary_correct"])
    if m.empty:
        return {"n": 0, "accuracy": np.nan, "cohens_kappa": np.nan, "per_system": pd.DataFrame()}
    per = m.groupby("model_name").agg(
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


def pairwise_battles(judgments: pd.DataFrame, judge: str | None = None) -> pd.DataFrame:
    """One row per judged pair and instruction, both orders combined: system_a, system_b, outcome
    ("a", "b" or "tie"); a verdict that flips with the order is a tie (`flipped`). Pairs with an
    invalid or missing verdict in either order are left out and counted in `attrs['n_incomplete']`."""
    j = judgments[(judgments["mode"] == "pairwise") & judgments.error.isna()]
    if judge:
        j = j[j.judge == judge]
    rows, incomplete = [], 0
    groups = j.groupby(["judge", "instruction_id", "systems"]) if len(j) else []
    for (name, iid, systems), part in groups:
        orders = {o: r for o, r in zip(part.order, part.itertuples(index=False))}
        if set(orders) != {"AB", "BA"} or not all(bool(r.valid) for r in orders.values()):
            incomplete += 1
            continue
        a, b = systems.split("|")
        # In order AB, A is system a; in BA, A is system b.
        first = {"A": "a", "B": "b", "tie": "tie"}[orders["AB"].verdict["winner"]]
        second = {"A": "b", "B": "a", "tie": "tie"}[orders["BA"].verdict["winner"]]
        outcome = first if first == second else "tie"
        rows.append(
            {"judge": name, "instruction_id": iid, "system_a": a, "system_b": b, "outcome": outcome,
             "flipped": first != second and "tie" not in (first, second),
             "first_choice_ab": orders["AB"].verdict["winner"], "first_choice_ba": orders["BA"].verdict["winner"]}
        )  # fmt: skip
    out = pd.DataFrame(rows, columns=["judge", "instruction_id", "system_a", "system_b", "outcome", "flipped",
                                      "first_choice_ab", "first_choice_ba"])  # fmt: skip
    out.attrs["n_incomplete"] = incomplete
    return out


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
        "consistent_share": float((battles.first_choice_ab.map({"A": "a", "B": "b", "tie": "tie"})
                                   == battles.first_choice_ba.map({"A": "b", "B": "a", "tie": "tie"})).mean())
        if len(battles) else np.nan,
    }  # fmt: skip


def battle_counts(battles: pd.DataFrame, models: list[str]) -> tuple[list, np.ndarray, np.ndarray]:
    """(instruction ids, W, L): W[i, a, b] = 1 where the judge gave a the win over b on instruction i."""
    ids = sorted(battles.instruction_id.unique())
    pos = {m: k for k, m in enumerate(models)}
    row = {iid: k for k, iid in enumerate(ids)}
    w = np.zeros((len(ids), len(models), len(models)))
    for r in battles.itertuples(index=False):
        if r.system_a not in pos or r.system_b not in pos or r.outcome == "tie":
            continue
        a, b = pos[r.system_a], pos[r.system_b]
        win, lose = (a, b) if r.outcome == "a" else (b, a)
        w[row[r.instruction_id], win, lose] += 1
    return ids, w, np.transpose(w, (0, 2, 1))


def judge_win_matrix(battles: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """The judge's Figure 2: share of non-tied battles the row system won over the column system."""
    _, w, l = battle_counts(battles, models)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = w.sum(0) / (w.sum(0) + l.sum(0))
    np.fill_diagonal(share, np.nan)
    return pd.DataFrame(share, index=models, columns=models)


def judge_win_rates(battles: pd.DataFrame, models: list[str], n_resamples: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """Each system's win rate from the judge's battles (the paper's WR: the unweighted mean of its
    head-to-head shares), with a percentile bootstrap CI over instructions, and its place."""
    from .human_eval import _bootstrap_counts, win_rates

    ids, w, l = battle_counts(battles, models)
    m = len(models)
    if not len(ids):  # no valid verdict to count: every win rate unknown, said so
        empty = pd.DataFrame({"model": models, "judge_win_rate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                              "battles": 0, "place": np.nan})  # fmt: skip
        empty.attrs["note"] = "no valid pairwise verdicts"
        return empty
    weights = _bootstrap_counts(len(ids), n_resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = win_rates(w.sum(0) / (w.sum(0) + l.sum(0)) + np.where(np.eye(m, dtype=bool), np.nan, 0))
        bw = (weights @ w.reshape(len(ids), -1)).reshape(-1, m, m)
        bl = (weights @ l.reshape(len(ids), -1)).reshape(-1, m, m)
        share = bw / (bw + bl)
    share[:, np.arange(m), np.arange(m)] = np.nan
    boot = win_rates(share)
    alpha = (1 - confidence) / 2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
    out = pd.DataFrame({"model": models, "judge_win_rate": point, "ci_low": lo, "ci_high": hi,
                        "battles": (w.sum(0) + l.sum(0)).sum(1)})  # fmt: skip
    out["place"] = out.judge_win_rate.rank(ascending=False, method="min")
    return out.sort_values("judge_win_rate", ascending=False).reset_index(drop=True)


def pairwise_agreement(battles: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """The judge against the clinicians' non-tied battles on the same instruction and pair: the
    share it agrees with (its ties count as disagreement), and the share it called a tie."""
    rank = labels.set_index(["instruction_id", "model_name"]).model_rank
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
        own = s[(s.judge == judge) & s.model_name.isin(systems)]
        others = s[(s.judge != judge) & s.model_name.isin(systems)]
        both = own.merge(
            others.groupby(["instruction_id", "model_name"]).score.mean().rename("others").reset_index(),
            on=["instruction_id", "model_name"],
        )
        rows.append(
            {"judge": judge, "systems": ", ".join(systems), "n": len(both),
             "own_mean": both.score.mean() if len(both) else np.nan,
             "others_mean": both.others.mean() if len(both) else np.nan}
        )  # fmt: skip
    out = pd.DataFrame(rows)
    if len(out):
        out["self_preference"] = out.own_mean - out.others_mean
    return out


def with_new_system(items: pd.DataFrame, answers: pd.DataFrame, system: str) -> pd.DataFrame:
    """The reviewed responses plus a new system's answers to the same instructions (`answers`: the
    generation runner's results, rows of one system with instruction_id and answer), so the new
    system can be judged against the paper's six on equal terms. Instructions it did not answer
    keep only the six."""
    mine = answers[answers.error.isna()].drop_duplicates("instruction_id", keep="last")
    mine = mine[mine.instruction_id.isin(items.instruction_id)]
    first = items.drop_duplicates("instruction_id").set_index("instruction_id")
    new = pd.DataFrame(
        {
            "instruction_id": mine.instruction_id.to_numpy(),
            "system": system,
            "response": mine.answer.fillna("").astype(str).to_numpy(),
        }
    )
    for col in ("person_id", "question", "reference"):
        new[col] = new.instruction_id.map(first[col])
    return pd.concat([items, new[items.columns.intersection(new.columns)]], ignore_index=True)


def judge_all_modes(judges: list[Judge], modes, items: pd.DataFrame, release, out_dir: str | Path,
                    progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """Every judge in every mode over `items` (pairwise: both orders of every pair), each to its own
    JSONL under `out_dir`; returns one row of counts per judge and mode."""
    rows = []
    pairs = pairwise_items(items) if "pairwise" in modes else None
    for judge in judges:
        for mode in modes:
            path = Path(out_dir) / f"{_safe(judge.name)}-{mode}.jsonl"
            stats = run_judgments(judge, mode, pairs if mode == "pairwise" else items, release, path, progress)
            rows.append({"judge": judge.name, "mode": mode, "file": path.name, **stats})
    return pd.DataFrame(rows)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
