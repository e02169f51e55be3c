"""Running LLM judges over MedAlign responses: the items they judge, their prompts, and the
resumable run. What each mode asks and how its verdict is read is the mode's (`modes`: rubric,
correct, pairwise with both orders, medhelm, and any registered mode).

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

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...context import render_fitted
from ...data.release import primary_reviewer_rows
from ...generation.store import ResultStore, prompt_hash, read_results
from .modes import JudgeMode, get_mode
from .settings import Judge
from .verdicts import value_distributions

if TYPE_CHECKING:  # annotations only
    from ...data.release import Release


# A verdict is on one system's response (`system`), or on a `pair` "a|b" of them (the other field empty).
KEY_FIELDS = ("judge", "mode", "instruction_id", "system", "pair", "order", "prompt_hash")


# ------------------------------------------------------------------ judges and what they judge


def response_items(release: Release, instructions=None, systems=None) -> pd.DataFrame:
    """One row per reviewed response (instruction x system): instruction_id, person_id, question,
    reference (the primary reviewer's), system, response."""
    resp = release.model_responses.drop_duplicates(["instruction_id", "system"])
    if instructions is not None:
        resp = resp[resp.instruction_id.isin(instructions)]
    if systems is not None:
        resp = resp[resp.system.isin(systems)]
    return _with_references(release, resp.rename(columns={"system": "system", "model_response": "response"}))


def _with_references(release: Release, items: pd.DataFrame) -> pd.DataFrame:
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
    instruction_id, person_id, question, reference, pair ("a|b"), order ("AB" or "BA"),
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
                        "system": "",
                        "pair": f"{a}|{b}",
                        "order": order,
                        "response_a": by[x],
                        "response_b": by[y],
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ running a judge


def judge_prompts(
    judge: Judge, mode: str | JudgeMode, items: pd.DataFrame, release: Release, *, context: int | None = None
) -> list[str]:
    """The judge's prompt for each item, the EHR fitted into its context (or left out): `context`
    tokens (default the judge's), less its safety margin when its tokenizer is a stand-in. The
    prompts of one instruction hold the very same EHR (fitted once, beside its longest responses),
    so everything before the responses is one prefix that a server's prefix cache serves once."""
    mode = get_mode(mode)
    template = mode.template()
    budget = int((context or judge.context_length) * (1 - judge.budget_margin))
    reserve = judge.reserve
    if judge.constrained and judge.backend.kind == "openai-compatible":  # a server is asked for the whole verdict
        reserve = max(reserve, mode.constraint(free_tokens=judge.free_tokens).max_chars)
    chat = judge.use_chat_template and judge.tokenizer is not None
    prompts: list[str] = [""] * len(items)
    for _, idx in items.groupby("instruction_id", sort=False).indices.items():
        rows = [items.iloc[i] for i in idx]
        fields = [mode.fields(r) for r in rows]
        parts = [template.parts(judge.tokenizer, chat, **f) for f in fields]
        size = judge.tokenizer.count if judge.tokenizer is not None else len
        longest = max(range(len(rows)), key=lambda k: size(parts[k][0] + parts[k][1]))
        full = render_fitted(
            judge.tokenizer,
            release,
            rows[longest].person_id,
            template,
            fields=fields[longest],
            context_length=budget,
            reserve=reserve,
            strategy=judge.strategy,
            use_chat_template=judge.use_chat_template,
        )
        head, tail = parts[longest]
        ehr = full[len(head) : len(full) - len(tail)]
        for k, i in enumerate(idx):
            prompts[i] = parts[k][0] + ehr + parts[k][1]
    return prompts


def _shared_prefixes(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the share of its prompt that every prompt of its instruction shares (the
    instructions, EHR, question and reference come first, so a server's prefix cache serves them),
    and whether an earlier prompt already sent that prefix."""
    share, repeated = np.zeros(len(items)), np.zeros(len(items), dtype=bool)
    for _, idx in items.groupby("instruction_id", sort=False).indices.items():
        prompts = items.prompt.iloc[idx].tolist()
        n = len(os.path.commonprefix(prompts)) if len(prompts) > 1 else 0
        share[idx] = [n / max(1, len(p)) for p in prompts]
        repeated[idx[1:]] = n > 0
    return share, repeated


def run_judgments(
    judge: Judge,
    mode: str | JudgeMode,
    items: pd.DataFrame,
    release: Release,
    out_path: str | Path,
    *,
    progress: bool = True,
) -> dict:
    """Judge every item not yet in `out_path`; returns counts (judgments, invalid, failed, tokens).
    Each judgment is written as soon as it is final (a kill loses only the requests in flight)."""
    mode = get_mode(mode)
    items = items.copy()
    if "pair" not in items.columns:
        items["pair"] = ""
    if "order" not in items.columns:
        items["order"] = ""
    items["prompt"] = judge_prompts(judge, mode, items, release)
    items["prompt_hash"] = items.prompt.map(prompt_hash)
    items["judge"], items["mode"] = judge.name, mode.name
    items["prefix_share"], items["prefix_repeated"] = _shared_prefixes(items)
    stats = {"judgments": 0, "invalid": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}
    stats.update(shrunk=0, with_distribution=0, cached=0)
    # Responses whose patient has no EHR file are judged without the record: counted, and said.
    has_ehr = items.person_id.astype(str).isin({str(p) for p in release.ehr_files})
    stats["without_ehr"] = int((~has_ehr).sum()) if judge.tokenizer is not None else 0
    identity = judge.describe()

    def tally(records: list[dict]) -> None:
        for r in records:
            stats["judgments"] += r["error"] is None
            stats["failed"] += r["error"] is not None
            stats["invalid"] += r["error"] is None and not r["valid"]
            stats["prompt_tokens"] += r["prompt_tokens"] or 0
            stats["completion_tokens"] += r["completion_tokens"] or 0
            stats["shrunk"] += bool(r.get("shrinks"))
            stats["with_distribution"] += r.get("distribution") is not None
            stats["cached"] += bool(r.get("cached"))

    concurrent = judge.backend.kind == "openai-compatible"
    # Judgments are written one by one, so a long chunk loses nothing; it only keeps every request slot busy.
    chunk = max(judge.backend.batch_size, 16 * getattr(judge.backend, "max_concurrency", 1)) if concurrent else None
    with ResultStore(out_path, KEY_FIELDS, upgrade=upgrade_judgment) as store:
        ran = store.run(
            items,
            lambda part: _judge_stream(judge, mode, part, release, identity=identity),
            chunk_size=chunk or judge.backend.batch_size,
            tally=tally,
            desc=f"judging ({judge.name}, {mode.name})",
            unit="judgment",
            progress=progress,
        )
    return {**stats, **ran}


@dataclass
class _Attempt:
    """One item's progress through asking, asking again and refitting."""

    prompt: str
    context: int
    attempts: int = 0
    shrinks: int = 0
    tokens: np.ndarray = None  # prompt and completion tokens over every attempt
    seconds: float = 0.0
    answer: object = None
    verdict: dict | None = None
    reason: str | None = None


def _judge_stream(judge: Judge, mode: JudgeMode, chunk: pd.DataFrame, release: Release, *, identity: dict):
    """Ask, parse, ask again (up to `judge.retries` times) the items whose verdict is invalid, and
    refit the prompts a server finds too long; yield each judgment as soon as it is final."""
    constraint = mode.constraint(free_tokens=judge.free_tokens) if judge.constrained else None
    rows = list(chunk.itertuples(index=False))
    state = [_Attempt(p, judge.context_length, tokens=np.zeros(2)) for p in chunk.prompt]
    pending = list(range(len(rows)))
    cache, first = judge.cache, True
    while pending:
        again, answered = [], []
        if cache is not None and first:  # first asks only: a retry is a new request
            keys = {i: cache.key(judge.backend, state[i].prompt, constraint) for i in pending}
            answered = [(i, hit) for i in pending if (hit := cache.get(keys[i])) is not None]
            pending = [i for i in pending if i not in dict(answered)]
        asked = judge.backend.iter_generate([state[i].prompt for i in pending], constraint=constraint)
        for i, ans in itertools.chain(answered, ((pending[k], a) for k, a in asked)):
            if cache is not None and first and not ans.cached:
                cache.put(keys[i], ans)
            st = state[i]
            st.attempts += 1
            st.tokens += (ans.prompt_tokens or 0, ans.new_tokens or 0)
            st.seconds += ans.seconds
            st.answer = ans
            if ans.error and ans.context_exceeded and st.shrinks < judge.shrink_retries:
                st.shrinks += 1
                # The context the server names, when it names one (and from here on for every prompt
                # of this judge); else three quarters of the last try.
                named = ans.context_limit if ans.context_limit and ans.context_limit < st.context else None
                st.context = named or int(st.context * 0.75)
                if named:
                    judge.context_length = min(judge.context_length, named)
                st.prompt = judge_prompts(judge, mode, chunk.iloc[[i]], release, context=st.context)[0]
                again.append(i)
                continue
            if not ans.error:
                st.verdict, st.reason = mode.parse(ans.text)
                if st.verdict is None and st.attempts <= judge.retries:
                    again.append(i)
                    continue
            yield _judgment(judge, mode, rows[i], st, identity=identity)
        pending, first = again, False


def _distribution(mode: JudgeMode, ans) -> tuple[dict | None, str]:
    """The value distributions of an answer, and where they came from."""
    if ans.choice_probs:
        return ans.choice_probs, "model"
    dist = value_distributions(mode, ans.token_logprobs)
    if dist is not None:
        return dist, "server"
    return None, "none: the server returned no token probabilities" if not ans.token_logprobs else "none: unreadable"


def _judgment(judge: Judge, mode: JudgeMode, row, st: _Attempt, *, identity: dict) -> dict:
    ans, v = st.answer, st.verdict
    error = ans.error
    dist, source = _distribution(mode, ans) if v is not None else (None, "none: no valid verdict")
    prompt_tokens, completion_tokens = int(st.tokens[0]), int(st.tokens[1])
    repeated = int(round(prompt_tokens * row.prefix_share)) if row.prefix_repeated else 0
    cost = prompt_tokens / 1000 * judge.price_prompt_per_1k + completion_tokens / 1000 * judge.price_completion_per_1k
    cached = judge.price_cached_prompt_per_1k
    rec = {k: getattr(row, k) for k in KEY_FIELDS}
    rec.update(
        valid=v is not None,
        invalid_reason=None if v is not None or error else st.reason,
        verdict=v,
        score=mode.score(v) if v is not None else None,
        distribution=dist,
        expected_score=mode.expected(dist) if dist is not None else None,
        probabilities=source,
        structured_output=ans.structured_output
        if ans.structured_output
        else "constrained"
        if ans.choice_probs
        else None,
        output=ans.text,
        error=error,
        cached=ans.cached,  # served from the judge's request cache: no request sent
        attempts=st.attempts,
        shrinks=st.shrinks,
        context_used=st.context,
        sent_prompt_hash=prompt_hash(st.prompt) if st.shrinks else row.prompt_hash,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        repeated_prefix_tokens=repeated,
        seconds=round(float(st.seconds), 4),
        cost=cost,
        cost_with_prefix_cache=None
        if cached is None
        else cost - repeated / 1000 * (judge.price_prompt_per_1k - cached),
        # The form a refusal moved the server on to, not the one first asked for.
        judge_identity={**identity, **({"structured_output": ans.structured_output} if ans.structured_output else {})},
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return rec


# What a line must hold to be a judgment (the rest of its key has defaults).
JUDGMENT_FIELDS = ("judge", "mode", "instruction_id", "valid")


def read_judgments(paths) -> pd.DataFrame:
    """Judgments from one or more JSONL files, one per key (the latest). A file that does not exist
    is an error; each line that is not a judgment is skipped and named in `.attrs["skipped"]`."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such judgments file")
    skipped: list[str] = []
    frames = [
        read_results(p, KEY_FIELDS, upgrade=upgrade_judgment, required=JUDGMENT_FIELDS, skipped=skipped) for p in paths
    ]
    frames = [f for f in frames if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY_FIELDS, "valid", "score"])
    out.attrs["skipped"] = skipped
    return out


def upgrade_judgment(rec: dict) -> dict:
    """A judgment written before verdicts were keyed by `system` or `pair` (one `systems` field):
    the same judgment in today's keys, so earlier runs resume instead of being judged again."""
    if "systems" in rec and "pair" not in rec:
        rec = dict(rec)
        judged = str(rec.pop("systems"))
        rec["system"], rec["pair"] = ("", judged) if rec.get("mode") == "pairwise" else (judged, "")
    return rec


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


def generation_items(release: Release, answers: pd.DataFrame, system: str, *, pairwise: bool = False) -> pd.DataFrame:
    """Items that judge `system`'s stored answers (`generation.read_answers`) on the reviewed
    instructions: its own responses for a pointwise mode, or, with `pairwise`, both orders of each
    battle against every reviewed system. `attrs["not_reviewed"]` counts answers to instructions
    no clinician reviewed (not judged: nothing to compare them with)."""
    items = response_items(release)
    if system in set(items.system):
        raise ValueError(f"{system!r} is one of the reviewed systems: name the stored answers' system apart (--system)")
    mine = answers[answers.system == system]
    placed = with_new_system(items, mine, system)
    if pairwise:
        six = sorted(items.system.unique())
        placed = placed[placed.instruction_id.isin(placed[placed.system == system].instruction_id)]
        out = pairwise_items(placed, [(system, other) for other in six])
    else:
        out = placed[placed.system == system].reset_index(drop=True)
    out.attrs["not_reviewed"] = int((~mine.instruction_id.isin(items.instruction_id)).sum())
    return out


def estimate_judgments(judge: Judge, mode: str | JudgeMode, items: pd.DataFrame, release: Release) -> dict:
    """What judging `items` would spend, sending nothing: requests (one per item; retries not
    counted), prompt tokens of the fitted prompts (the judge's tokenizer, else cl100k), completion
    tokens at most (the verdict's room per request), and the cost at the judge's prices (the
    prompts' shared prefix priced as cached where a cached price is set)."""
    from ...context import load_tokenizer

    mode = get_mode(mode)
    prompts = judge_prompts(judge, mode, items, release)
    tokenizer = judge.tokenizer or load_tokenizer("cl100k")
    prompt_tokens = sum(tokenizer.count(p) for p in prompts)
    room = judge.reserve
    if judge.constrained and judge.backend.kind == "openai-compatible":  # asked for the whole verdict
        room = max(room, mode.constraint(free_tokens=judge.free_tokens).max_chars)
    completion = room * len(prompts)
    cost = prompt_tokens / 1000 * judge.price_prompt_per_1k + completion / 1000 * judge.price_completion_per_1k
    return {
        "requests": len(prompts),
        "prompt_tokens": prompt_tokens,
        "completion_tokens_at_most": completion,
        "cost_at_most": cost,
    }


def judge_all_modes(
    judges: list[Judge], modes, items: pd.DataFrame, release: Release, *, out_dir: str | Path, progress: bool = True
) -> pd.DataFrame:
    """Every judge in every mode over `items` (pairwise: both orders of every pair), each to its own
    JSONL under `out_dir`; returns one row of counts per judge and mode."""
    rows = []
    modes = [get_mode(m) for m in modes]
    pairs = pairwise_items(items) if any(m.judges == "pair" for m in modes) else None
    for judge in judges:
        for mode in modes:
            path = judgments_file(out_dir, judge.name, mode.name)
            chosen = pairs if mode.judges == "pair" else items
            stats = run_judgments(judge, mode, chosen, release, path, progress=progress)
            rows.append({"judge": judge.name, "mode": mode.name, "file": path.name, **stats})
    return pd.DataFrame(rows)


def judgments_file(out_dir: str | Path, judge_name: str, mode: str) -> Path:
    """Where a judge's verdicts in one mode are kept: `<out_dir>/<judge>-<mode>.jsonl`, the name made
    safe for a file system."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in judge_name)
    return Path(out_dir) / f"{safe}-{mode}.jsonl"
