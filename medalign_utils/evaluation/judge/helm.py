"""A HELM run of MedAlign brought into the suite: its completions as a generations file (a system
to judge and place beside the six) and its jurors' annotations as `medhelm` judgments (so
`medalign table4 --judgments` measures MedHELM's jury against the clinicians).

HELM's instance ids are ``id<N>``: N counts, from 0 in file order, the ``Annotator_1`` rows of
`clinician-instruction-responses.tsv` whose instruction the reviewed-responses file also holds
(HELM merges the two and numbers what is left). Each mapping is checked against the question
inside the instance's prompt; published runs redact prompts (``"[redacted]"``), and are then
mapped by that order alone, which the summary says.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ...generation.store import prompt_hash
from .modes import RUBRIC_KEYS, get_mode
from .running import KEY_FIELDS

if TYPE_CHECKING:  # annotations only
    from ...data.release import Release


REDACTED = "[redacted]"
GENERATION_KEYS = ("instruction_id", "system", "strategy", "context", "prompt_hash")


def helm_instance_ids(release: Release) -> dict[str, str]:
    """HELM's instance id (``id<N>``) -> MedAlign instruction_id, as HELM's MedAlign loader numbers
    its instances."""
    refs = release.references
    first = refs[refs.annotator_num.astype(str) == "Annotator_1"]
    reviewed = set(release.model_responses.instruction_id.astype(str))
    kept = first[first.instruction_id.astype(str).isin(reviewed)].instruction_id.astype(str)
    return {f"id{n}": iid for n, iid in enumerate(kept)}


def read_helm_run(run_dir: str | Path) -> pd.DataFrame:
    """A HELM run folder's instances: instance_id, input_text, completion, annotations (juror ->
    criterion -> {score, explanation}), from `scenario_state.json` or else
    `display_predictions.json`."""
    run_dir = Path(run_dir)
    state, display = run_dir / "scenario_state.json", run_dir / "display_predictions.json"
    rows = []
    if state.is_file():
        for k, rs in enumerate(_load(state).get("request_states") or []):
            inst, result = rs.get("instance") or {}, rs.get("result") or {}
            completions = result.get("completions") or [{}]
            rows.append(
                {
                    "instance_id": inst.get("id") or f"#{k}",
                    "input_text": (inst.get("input") or {}).get("text", ""),
                    "completion": completions[0].get("text", ""),
                    "annotations": (rs.get("annotations") or {}).get("medalign") or {},
                }
            )
    elif display.is_file():
        for k, p in enumerate(_load(display)):
            rows.append(
                {
                    "instance_id": p.get("instance_id") or f"#{k}",
                    "input_text": None,  # display predictions hold no prompt: mapped by order
                    "completion": p.get("predicted_text", ""),
                    "annotations": (p.get("annotations") or {}).get("medalign") or {},
                }
            )
    else:
        raise FileNotFoundError(
            f"{run_dir}: no scenario_state.json or display_predictions.json (not a HELM run folder)"
        )
    return pd.DataFrame(rows, columns=["instance_id", "input_text", "completion", "annotations"])


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None


def map_helm_instances(run: pd.DataFrame, release: Release) -> tuple[pd.DataFrame, list[str], int]:
    """The run's instances with their instruction_id, the problems (one line per instance that maps
    to no instruction or whose prompt holds another question: left out), and how many were mapped
    by order alone (redacted or missing prompts)."""
    ids = helm_instance_ids(release)
    question = release.instructions.set_index("instruction_id").question
    keep, problems, by_order = [], [], 0
    for row in run.itertuples(index=False):
        iid = ids.get(str(row.instance_id))
        if iid is None:
            problems.append(f"instance {row.instance_id}: no MedAlign instruction has this HELM id ({len(ids)} do)")
            continue
        text = row.input_text
        if text is None or text.strip() == REDACTED or not text.strip():
            by_order += 1
        elif " ".join(str(question.get(iid, "")).split()) not in " ".join(text.split()):
            problems.append(
                f"instance {row.instance_id}: its prompt does not hold the question of instruction {iid}, left out"
            )
            continue
        keep.append({**row._asdict(), "instruction_id": iid})
    return pd.DataFrame(keep, columns=[*run.columns, "instruction_id"]), problems, by_order


def helm_verdict(annotation: dict) -> tuple[dict | None, str | None]:
    """A juror's annotation as a `medhelm` verdict (accuracy, completeness, clarity, each score and
    explanation), checked as any judge's verdict is."""
    verdict = {}
    for k in RUBRIC_KEYS:
        c = annotation.get(k) if isinstance(annotation, dict) else None
        if isinstance(c, dict):
            score = c.get("score")
            score = int(score) if isinstance(score, float) and score.is_integer() else score
            verdict[k] = {"score": score, "explanation": str(c.get("explanation", ""))}
        else:
            verdict[k] = c
    return get_mode("medhelm").parse(json.dumps(verdict))


def import_helm_run(
    run_dir: str | Path,
    release: Release,
    system: str,
    *,
    generations_out: str | Path,
    judgments_out: str | Path,
    allow_partial: bool = False,
) -> dict:
    """Write a HELM run's completions (generations, under `system`) and its jurors' annotations
    (`medhelm` judgments by ``helm:<juror>``); returns what was imported and every problem.

    An instance that maps to no instruction, or to the wrong one, makes the import write nothing
    (`written` False) unless `allow_partial`. Importing again replaces what an earlier import of
    the same instructions wrote for `system` (from the run's state or its display files alike):
    new answers replace old ones, nothing is written twice."""
    run = read_helm_run(run_dir)
    mapped, problems, by_order = map_helm_instances(run, release)
    if problems and not allow_partial:
        return {
            "instances": len(run),
            "imported": 0,
            "left_out": len(run),
            "mapped_by_order": by_order,
            "jurors": [],
            "judgments": 0,
            "invalid_verdicts": 0,
            "replaced": 0,
            "problems": problems,
            "written": False,
        }
    now = datetime.now(UTC).isoformat(timespec="seconds")
    source = {"source": "helm", "run_dir": Path(run_dir).name}
    generations, judgments, invalid = [], [], 0
    for row in mapped.itertuples(index=False):
        h = prompt_hash(row.input_text or f"{row.instance_id}")
        generations.append(
            {
                "instruction_id": row.instruction_id,
                "system": system,
                "strategy": "helm",
                "context": 0,
                "prompt_hash": h,
                "answer": row.completion,
                "error": None,
                "helm_instance_id": row.instance_id,
                "finished": now,
                **source,
            }
        )
        for juror, annotation in sorted((row.annotations or {}).items()):
            verdict, why = helm_verdict(annotation)
            invalid += verdict is None
            rec = dict.fromkeys(KEY_FIELDS, "")
            rec.update(judge=f"helm:{juror}", mode="medhelm", instruction_id=row.instruction_id, system=system)
            rec.update(prompt_hash=h, valid=verdict is not None, invalid_reason=why, verdict=verdict)
            rec.update(score=get_mode("medhelm").score(verdict) if verdict else None, distribution=None)
            rec.update(expected_score=None, probabilities="none: HELM records no token probabilities")
            rec.update(output=json.dumps(annotation, default=str), error=None, helm_instance_id=row.instance_id)
            rec.update(prompt_tokens=None, completion_tokens=None, cost=None, seconds=None, finished=now, **source)
            judgments.append(rec)
    replaced = _replace(generations_out, generations, ("instruction_id", "system"))
    replaced += _replace(judgments_out, judgments, ("judge", "mode", "instruction_id", "system"))
    return {
        "instances": len(run),
        "imported": len(mapped),
        "left_out": len(run) - len(mapped),
        "mapped_by_order": by_order,
        "jurors": sorted({j["judge"] for j in judgments}),
        "judgments": len(judgments),
        "invalid_verdicts": invalid,
        "replaced": replaced,
        "problems": problems,
        "written": True,
    }


def _replace(path: str | Path, records: list[dict], key: tuple[str, ...]) -> int:
    """Write `records` into the JSONL file at `path`, in place of any record there with the same
    `key` (an earlier import); returns how many were replaced. Written through a temporary file."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_keys = {tuple(str(r.get(k)) for k in key) for r in records}
    kept, replaced = [], 0
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                old = json.loads(line)
            except ValueError:
                kept.append(line)  # not ours to judge: kept as it is
                continue
            if tuple(str(old.get(k)) for k in key) in new_keys:
                replaced += 1
            else:
                kept.append(line)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    lines = kept + [json.dumps(r, default=str) for r in records]
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    return replaced
