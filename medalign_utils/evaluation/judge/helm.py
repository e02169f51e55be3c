"""A HELM run of MedAlign brought into the suite: its completions as a generations file (a system
to judge and place beside the six) and its jurors' annotations as `medhelm` judgments (so
`medalign table4 --judgments` measures MedHELM's jury against the clinicians).

HELM's instance ids are ``id<N>``: N counts the rows of HELM's own reading of the release
(crfm-helm 0.5.16's `medalign_scenario_helper`): the reviewed-responses TSV and the references TSV
read by `pandas.read_csv` with its default quoting (a field that starts with ``"`` runs on into the
following rows), the references' ``Annotator_1`` rows merged with the instructions, in the
references' order. The suite numbers instances the same way (`helm_instances`), then checks every
instance against the release as the suite reads it: the question inside its prompt and its
reference answer. A published run redacts prompts but keeps references; an instance with nothing
left to check is not imported blind. A run of another scenario is refused from its `run_spec.json`.

The jury's score is HELM's `LLMJuryMetric` exactly (`helm_jury_score`): every criterion of every
juror, each score through ``int()``, pooled; the run spec's default (1.0) when no juror scored,
as for an empty answer, which HELM never sends to the jurors.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ...generation.store import prompt_hash
from .modes import get_mode
from .running import KEY_FIELDS

if TYPE_CHECKING:  # annotations only
    from ...data.release import Release


REDACTED = "[redacted]"
GENERATION_KEYS = ("instruction_id", "system", "strategy", "context", "prompt_hash")
MEDALIGN_SCENARIO = "MedalignScenario"
# Keys of a HELM annotation that are not jurors (LLMAsJuryAnnotator's bookkeeping).
BOOKKEEPING_KEYS = ("prompt_text", "empty_output_equivalence_judgement")
HELM_DEFAULT_SCORE = 1.0  # MedAlign's LLMJuryMetric default: no juror scored (an empty answer)
HELM_SCORE_STAT = "medalign_accuracy"


class HelmRunError(ValueError):
    """A folder that is not a HELM MedAlign run (its one line names the folder and why)."""


# ------------------------------------------------------------------ HELM's numbering


def _as_id(value) -> str:
    """An instruction id as pandas parsed it, as the suite writes it (123, not 123.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def helm_instances(release: Release) -> pd.DataFrame:
    """HELM's instances of this release, as its MedAlign loader builds and numbers them:
    instance_id (``id<N>``), instruction_id, question and reference as HELM read them.
    `attrs["problem"]` says why there are none when HELM's reading of the files fails."""
    from ...data.release import REFERENCES_STEM, RESPONSES_STEM

    cols = ["instance_id", "instruction_id", "question", "reference"]
    tables = release.layout.tables
    if RESPONSES_STEM not in tables or REFERENCES_STEM not in tables:
        out = pd.DataFrame(columns=cols)
        out.attrs["problem"] = f"HELM reads {RESPONSES_STEM}.tsv and {REFERENCES_STEM}.tsv: the release lacks one"
        return out
    try:
        instructions = _read_as_helm(tables[RESPONSES_STEM])
        by_id: dict = {}
        for row in instructions.itertuples(index=False):  # a dict keyed by id, as HELM's: first place, last text
            by_id[row.instruction_id] = row.question
        prompts = pd.DataFrame({"instruction_id": list(by_id)})
        gold = _read_as_helm(tables[REFERENCES_STEM])
        gold = gold[gold.annotator_num == "Annotator_1"][["instruction_id", "clinician_response"]]
        merged = gold.merge(prompts, on="instruction_id", how="inner")
    except (ValueError, KeyError, pd.errors.ParserError) as err:
        out = pd.DataFrame(columns=cols)
        out.attrs["problem"] = f"HELM's reader fails on this release ({str(err).splitlines()[0]})"
        return out
    return pd.DataFrame(
        {
            "instance_id": [f"id{n}" for n in range(len(merged))],
            "instruction_id": [_as_id(v) for v in merged.instruction_id],
            "question": [str(by_id[v]) for v in merged.instruction_id],
            "reference": merged.clinician_response.astype(str).to_list(),
        },
        columns=cols,
    )


def _read_as_helm(path: Path) -> pd.DataFrame:
    # HELM: pd.read_csv(path, sep="\t"), default quoting and types (ids parse as numbers).
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def helm_instance_ids(release: Release) -> dict[str, str]:
    """HELM's instance id (``id<N>``) -> MedAlign instruction_id, as HELM numbers its instances."""
    inst = helm_instances(release)
    return dict(zip(inst.instance_id, inst.instruction_id))


# ------------------------------------------------------------------ a run folder


def read_run_spec(run_dir: str | Path) -> dict:
    """What a HELM run's `run_spec.json` says about it: scenario, model, max_length (the context
    its prompts were fitted to), max_tokens, the jurors and the jury's default score. A run of
    another scenario, or a folder without a run spec, raises `HelmRunError`."""
    run_dir = Path(run_dir)
    path = run_dir / "run_spec.json"
    if not path.is_file():
        raise HelmRunError(f"{run_dir}: no run_spec.json (not a HELM run folder; HELM writes one in every run)")
    spec = _load(path)
    scenario = (spec.get("scenario_spec") or {}).get("class_name", "")
    if not str(scenario).endswith(MEDALIGN_SCENARIO):
        raise HelmRunError(
            f"{path}: a run of scenario {scenario or '(none named)'}, not MedAlign ({MEDALIGN_SCENARIO}): refused"
        )
    args = (spec.get("scenario_spec") or {}).get("args") or {}
    adapter = spec.get("adapter_spec") or {}
    jurors, default = None, HELM_DEFAULT_SCORE
    for metric in spec.get("metric_specs") or []:
        if str(metric.get("class_name", "")).endswith("LLMJuryMetric"):
            margs = metric.get("args") or {}
            jurors = sorted(margs.get("annotator_models") or {}) or None
            default = float(margs.get("default_score", default))
    return {
        "name": spec.get("name", run_dir.name),
        "model": adapter.get("model") or adapter.get("model_deployment"),
        "max_length": args.get("max_length"),
        "max_tokens": adapter.get("max_tokens"),
        "jurors": jurors,
        "default_score": default,
    }


def read_helm_run(run_dir: str | Path) -> pd.DataFrame:
    """A HELM run folder's instances: instance_id, input_text, reference, completion, annotations
    (juror -> criterion -> {score, explanation}) and HELM's own score where it wrote one, from
    `scenario_state.json`, or else `display_predictions.json` with `instances.json` (prompts and
    references) and `per_instance_stats.json`."""
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
                    "input_text": (inst.get("input") or {}).get("text"),
                    "reference": _reference(inst),
                    "completion": completions[0].get("text", ""),
                    "annotations": (rs.get("annotations") or {}).get("medalign"),
                }
            )
    elif display.is_file():
        instances = {}
        if (run_dir / "instances.json").is_file():
            instances = {i.get("id"): i for i in _load(run_dir / "instances.json")}
        for k, p in enumerate(_load(display)):
            iid = p.get("instance_id") or f"#{k}"
            inst = instances.get(iid) or {}
            rows.append(
                {
                    "instance_id": iid,
                    "input_text": (inst.get("input") or {}).get("text"),
                    "reference": _reference(inst),
                    "completion": p.get("predicted_text", ""),
                    "annotations": (p.get("annotations") or {}).get("medalign"),
                }
            )
    else:
        raise HelmRunError(f"{run_dir}: no scenario_state.json or display_predictions.json (not a HELM run folder)")
    out = pd.DataFrame(rows, columns=["instance_id", "input_text", "reference", "completion", "annotations"])
    stats = _helm_scores(run_dir / "per_instance_stats.json")
    out["helm_score"] = out.instance_id.map(stats) if stats else None
    return out


def _reference(instance: dict) -> str | None:
    refs = instance.get("references") or []
    return ((refs[0] or {}).get("output") or {}).get("text") if refs else None


def _helm_scores(path: Path) -> dict:
    """HELM's own per-instance jury score (`medalign_accuracy`) where the run wrote its stats."""
    if not path.is_file():
        return {}
    out = {}
    for entry in _load(path):
        for stat in entry.get("stats") or []:
            if (stat.get("name") or {}).get("name") == HELM_SCORE_STAT and stat.get("mean") is not None:
                out[entry.get("instance_id")] = float(stat["mean"])
    return out


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise HelmRunError(f"{path}: not JSON ({err})") from None


def _plain(text) -> str:
    return " ".join(str(text).split())


def map_helm_instances(run: pd.DataFrame, release: Release) -> tuple[pd.DataFrame, list[str], int]:
    """The run's instances with their instruction_id, the problems (one line per instance that maps
    to no instruction, or whose prompt holds another question, or whose reference is another
    answer, or that has neither left to check: left out), and how many were checked by their
    reference alone (redacted prompts)."""
    from ...data.release import primary_reviewer_rows

    instances = helm_instances(release)
    if "problem" in instances.attrs:
        return run.iloc[:0].assign(instruction_id=[]), [instances.attrs["problem"]] * max(1, len(run)), 0
    ids = dict(zip(instances.instance_id, instances.instruction_id))
    question = release.instructions.set_index("instruction_id").question
    refs = release.references
    refs = refs[refs.annotator_num.astype(str) == "Annotator_1"] if "annotator_num" in refs.columns else refs
    if not len(refs):
        refs = primary_reviewer_rows(release.references, ("clinician_response",))
    reference = refs.drop_duplicates("instruction_id").set_index("instruction_id").clinician_response
    keep, problems, by_reference = [], [], 0
    for row in run.itertuples(index=False):
        iid = ids.get(str(row.instance_id))
        if iid is None:
            problems.append(
                f"instance {row.instance_id}: HELM's reading of this release has no such instance ({len(ids)})"
            )
            continue
        text = row.input_text
        prompt_checked = bool(text and text.strip() and text.strip() != REDACTED)
        if prompt_checked and _plain(question.get(iid, "\0")) not in _plain(text):
            problems.append(
                f"instance {row.instance_id}: its prompt does not hold the question of instruction {iid}, left out"
            )
            continue
        ref = row.reference
        ref_checked = bool(ref and ref.strip() and ref.strip() != REDACTED)
        if ref_checked and _plain(reference.get(iid, "\0")) != _plain(ref):
            problems.append(
                f"instance {row.instance_id}: its reference is not Annotator_1's answer to instruction {iid}, left out"
            )
            continue
        if not prompt_checked and not ref_checked:
            problems.append(
                f"instance {row.instance_id}: no prompt or reference to check it against (instances.json missing?)"
                ", left out"
            )
            continue
        by_reference += not prompt_checked
        keep.append({**row._asdict(), "instruction_id": iid})
    return pd.DataFrame(keep, columns=[*run.columns, "instruction_id"]), problems, by_reference


# ------------------------------------------------------------------ HELM's jury score


def helm_juror_scores(annotation) -> tuple[list[int] | None, str | None]:
    """One juror's criterion scores as HELM's `LLMJuryMetric` reads them: ``int(score)`` of every
    criterion it returned (an extra `overall` included), or None and why HELM could not."""
    if not isinstance(annotation, dict) or not annotation:
        return None, "not a juror's criteria"
    scores = []
    for name, criterion in annotation.items():
        try:
            scores.append(int(criterion["score"]))
        except (TypeError, KeyError, ValueError):
            score = criterion.get("score") if isinstance(criterion, dict) else criterion
            return None, f"{name}.score {score!r} is not a number int() reads (HELM fails on it)"
    return scores, None


def helm_jury_score(annotations, answer: str, *, jurors=None, default_score: float = HELM_DEFAULT_SCORE) -> float:
    """HELM's per-instance MedAlign jury score: the mean of every criterion score of every juror
    (``int()`` each), `default_score` when none scored (an empty answer is never sent to them)."""
    scores: list[int] = []
    if str(answer).strip():
        for key, annotation in (annotations or {}).items():
            if key in BOOKKEEPING_KEYS or (jurors is not None and key not in jurors) or annotation is None:
                continue
            s, _ = helm_juror_scores(annotation)
            scores += s or []
    return sum(scores) / len(scores) if scores else default_score


def _jurors_of(run: pd.DataFrame, spec: dict) -> list[str]:
    if spec.get("jurors"):
        return list(spec["jurors"])
    seen = {k for a in run.annotations if isinstance(a, dict) for k, v in a.items() if isinstance(v, dict)}
    return sorted(seen - set(BOOKKEEPING_KEYS))


# ------------------------------------------------------------------ the import


def default_system_name(spec: dict) -> str:
    """The name an imported run's answers are recorded under by default: its model's name."""
    model = str(spec.get("model") or spec.get("name") or "helm")
    return model.rsplit("/", 1)[-1]


def import_helm_run(
    run_dir: str | Path,
    release: Release,
    system: str | None = None,
    *,
    generations_out: str | Path,
    judgments_out: str | Path,
    allow_partial: bool = False,
) -> dict:
    """Write a HELM run's completions (generations, under `system`; by default its model's name)
    and its jurors' annotations (`medhelm` judgments by ``helm:<juror>``); returns what was
    imported and every problem.

    An instance that maps to no instruction, or to the wrong one, makes the import write nothing
    (`written` False) unless `allow_partial`. Importing again replaces what an earlier import of
    the same instructions wrote for `system` (from the run's state or its display files alike).
    Each judgment holds the juror's criteria as HELM returned them and `n_criteria`, so the jury
    score (`jury_scores`) pools them as HELM does; an instance no juror scored carries HELM's
    default (`jury_default`). Where the run wrote its per-instance stats, HELM's own score must
    equal the suite's, or the instance is a problem."""
    spec = read_run_spec(run_dir)
    system = system or default_system_name(spec)
    run = read_helm_run(run_dir)
    mapped, problems, by_reference = map_helm_instances(run, release)
    jurors = _jurors_of(run, spec)
    generations, judgments, invalid = _helm_records(
        mapped, spec, system=system, jurors=jurors, run_dir=run_dir, problems=problems
    )
    summary = {
        "run": spec["name"],
        "system": system,
        "model": spec.get("model"),
        "context": spec.get("max_length"),
        "instances": len(run),
        "imported": len(mapped),
        "left_out": len(run) - len(mapped),
        "checked_by_reference_only": by_reference,
        "jurors": sorted({j["judge"] for j in judgments}),
        "judgments": len(judgments),
        "invalid_verdicts": invalid,
        "replaced": 0,
        "problems": problems,
        "written": False,
    }
    if problems and not allow_partial:
        return {**summary, "imported": 0, "left_out": len(run), "judgments": 0, "jurors": []}
    summary["replaced"] = _replace(generations_out, generations, ("instruction_id", "system"))
    summary["replaced"] += _replace(judgments_out, judgments, ("judge", "mode", "instruction_id", "system"))
    return {**summary, "written": True}


def _helm_records(mapped: pd.DataFrame, spec: dict, *, system: str, jurors: list[str], run_dir, problems: list):
    """The generation records and the jurors' judgment records of the mapped instances, and how
    many verdicts HELM could not score; a HELM score that disagrees is added to `problems`."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    source = {"source": "helm", "run_dir": Path(run_dir).name, "helm_run": spec["name"]}
    generations, judgments, invalid = [], [], 0
    for row in mapped.itertuples(index=False):
        score = helm_jury_score(
            row.annotations, row.completion, jurors=spec.get("jurors"), default_score=spec["default_score"]
        )
        if row.helm_score is not None and pd.notna(row.helm_score) and abs(row.helm_score - score) > 1e-9:
            problems.append(
                f"instance {row.instance_id}: HELM scored it {row.helm_score:g}, its annotations give {score:g}"
            )
        h = prompt_hash(row.input_text or f"{row.instance_id}")
        generations.append(
            {
                "instruction_id": row.instruction_id,
                "system": system,
                "strategy": "helm",
                "context": spec.get("max_length"),
                "prompt_hash": h,
                "answer": row.completion,
                "error": None,
                "model": spec.get("model"),
                "max_new_tokens": spec.get("max_tokens"),
                "helm_instance_id": row.instance_id,
                "helm_jury_score": score,
                "finished": now,
                **source,
            }
        )
        annotations = row.annotations if isinstance(row.annotations, dict) else {}
        empty = not str(row.completion).strip()
        for juror in jurors:
            annotation = annotations.get(juror)
            scores, why = helm_juror_scores(annotation)
            if empty:
                scores, why = None, "the answer is empty: HELM sends it to no juror (its score is the default)"
            elif annotation is None:
                why = "no annotation from this juror (HELM leaves out a juror whose reply it could not parse)"
            invalid += scores is None
            _, suite_check = get_mode("medhelm").parse(json.dumps(annotation)) if scores else (None, None)
            rec = dict.fromkeys(KEY_FIELDS, "")
            rec.update(judge=f"helm:{juror}", mode="medhelm", instruction_id=row.instruction_id, system=system)
            rec.update(prompt_hash=h, valid=scores is not None, invalid_reason=why, verdict=annotation)
            rec.update(score=sum(scores) / len(scores) if scores else None, n_criteria=len(scores or []))
            rec.update(jury_default=spec["default_score"], medhelm_check=suite_check, distribution=None)
            rec.update(expected_score=None, probabilities="none: HELM records no token probabilities")
            rec.update(output=json.dumps(annotation, default=str), error=None, helm_instance_id=row.instance_id)
            rec.update(prompt_tokens=None, completion_tokens=None, cost=None, seconds=None, finished=now, **source)
            judgments.append(rec)
    return generations, judgments, invalid


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
