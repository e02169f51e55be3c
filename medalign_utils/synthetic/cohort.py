"""Writing a synthetic cohort: `CohortSpec` (how big), `make_cohort` (records in parallel, then the
three tables, the SYNTHETIC marker, README.md and planted_truth.json), the same bytes for the same seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from .. import paper
from ..data.release import MARKER_GENERATOR, SYNTHETIC_MARKER, synthetic_marker
from ..parallel import iter_process_map
from .instructions import (
    CATEGORY_KINDS,
    DedupGate,
    category_counts,
    draw_specialty,
    instruction_for_kind,
    vary_question,
)
from .labels import (
    TIE_CONVENTION,
    LabelModel,
    expected_inter_rater_tau,
    expected_table3,
    simulate_labels,
)
from .records import BYTES_PER_TOKEN, PatientFacts, patient_record
from .responses import paraphrase, perturb_answer

GENERATOR_VERSION = "3"  # 2: gradable answers planted as values; 3: deduplicated wording, specialty skew


@dataclass(frozen=True)
class CohortSpec:
    """How big a cohort to make. `full` matches the paper; `default` keeps the shapes, fewer patients."""

    patients: int
    instructions: int
    gold: int
    multi_rated: int
    seed: int = 0
    # log-normal of record length in cl100k tokens: median exp(mu); sigma fitted to 19.6% <= 32k.
    length_log_median: float = 11.657
    length_log_sigma: float = 1.5
    min_tokens: int = 3_000
    max_tokens: int = 2_500_000

    @classmethod
    def for_scale(cls, scale: str = "default", patients: int | None = None, seed: int = 0) -> CohortSpec:
        if patients is not None and patients < 1:
            raise ValueError(f"patients must be at least 1 (got {patients})")
        if scale == "full":
            n = patients or paper.N_PATIENTS
            return cls(n, paper.N_INSTRUCTIONS, paper.N_GOLD, 50, seed)
        if scale == "default":
            n = patients or 24
            # Fewer patients (records are what costs), more instructions per patient (20, the gold
            # 31% of them as in the paper), so the label analyses still have ~150 instructions.
            n_instr = min(paper.N_INSTRUCTIONS, max(12, n * 20))
            n_gold = min(paper.N_GOLD, max(6, round(n_instr * 0.31)))
            return cls(n, n_instr, n_gold, min(50, max(3, n_gold // 6)), seed)
        raise ValueError(f"unknown scale {scale!r}: use 'default' or 'full'")


def record_lengths(spec: CohortSpec) -> np.ndarray:
    """Target length of each record in cl100k tokens (log-normal, clipped)."""
    rng = np.random.default_rng([spec.seed, 0])
    draws = rng.lognormal(spec.length_log_median, spec.length_log_sigma, size=spec.patients)
    return np.clip(draws, spec.min_tokens, spec.max_tokens).astype(int)


# ------------------------------------------------------------------ writing the release


def _tsv(path: Path, header: list[str], rows: list[list]) -> None:
    def clean(v) -> str:
        return str(v).replace("\t", " ").replace("\n", " ").replace("\r", " ")

    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(clean(v) for v in r) + "\n")


def refuse_foreign_folder(out: Path) -> None:
    """A cohort is written only into an empty folder or over an earlier synthetic cohort (one that
    holds the generator's marker): never over a release, whose records it would delete."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder; choose an empty folder for the cohort")
    marker = out / SYNTHETIC_MARKER
    ours = marker.is_file() and MARKER_GENERATOR in marker.read_text(encoding="utf-8", errors="replace")
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise FileExistsError(
            f"{out}: not empty and not a synthetic cohort (no {SYNTHETIC_MARKER} marker); refusing to write over it "
            "(it may be a release): choose an empty folder"
        )


def make_cohort(
    out: str | Path,
    spec: CohortSpec,
    *,
    workers: int | None = None,
    progress: bool = True,
    label_model: LabelModel | None = None,
) -> dict:
    """Write a synthetic release to `out` and return its planted truth (label model: the default
    `LabelModel` unless given)."""
    label_model = label_model or LabelModel()
    out = Path(out)
    refuse_foreign_folder(out)
    ehr_dir = out / "ehrs"
    ehr_dir.mkdir(parents=True, exist_ok=True)
    # The generator's marker first (for no files yet: the folder counts as real until it is done),
    # so that an interrupted generation can be rerun into the same folder.
    (out / SYNTHETIC_MARKER).write_text(synthetic_marker("generation in progress"))
    for old in ehr_dir.glob("*.xml"):
        old.unlink()
    lengths = record_lengths(spec)
    start_years = np.random.default_rng([spec.seed, 2]).integers(2008, 2016, size=spec.patients)
    jobs = [(spec.seed, i, int(lengths[i]), int(start_years[i])) for i in range(spec.patients)]
    facts: list[PatientFacts] = [None] * spec.patients  # type: ignore[list-item]
    # Records are written as they come, so memory holds one record per worker, not the cohort.
    for i, (pid, data, f) in iter_process_map(
        patient_record,
        jobs,
        workers=workers,
        size=lambda j: j[2],
        desc="synthesizing EHRs",
        unit="patient",
        progress=progress,
    ):
        (ehr_dir / f"{pid}.xml").write_bytes(data)
        facts[i] = f

    truth = _write_tables(out, spec, facts, label_model)
    truth["records"] = {
        "patients": spec.patients,
        "events": int(sum(f.n_events for f in facts)),
        "notes": int(sum(f.n_notes for f in facts)),
        "xml_bytes": int(sum(f.n_bytes for f in facts)),
        "target_tokens": {f.person_id: int(n) for f, n in zip(facts, lengths)},
        "length_model": {
            "distribution": "lognormal (cl100k tokens)",
            "log_median": spec.length_log_median,
            "log_sigma": spec.length_log_sigma,
            "min": spec.min_tokens,
            "max": spec.max_tokens,
            "bytes_per_token": BYTES_PER_TOKEN,
        },
    }
    (out / "planted_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    from ..data.release import find_layout

    (out / SYNTHETIC_MARKER).unlink(missing_ok=True)
    (out / SYNTHETIC_MARKER).write_text(synthetic_marker(find_layout(out, []).fingerprint()))
    (out / "README.md").write_text(_readme(spec, truth))
    return truth


def _write_tables(out: Path, spec: CohortSpec, facts: list[PatientFacts], label_model: LabelModel) -> dict:
    """The three tables, drawn in a fixed order from seeded generators; returns the planted truth."""
    rng = np.random.default_rng([spec.seed, 3])
    plan, all_counts, gold_counts = _category_plan(spec)
    instructions = _draw_instructions(plan, facts, rng)
    _write_instruction_table(out, instructions, rng)
    gold = [r for r in instructions if r["gold"]]
    _write_references(out, gold, rng)
    sim, multi = _write_responses(out, gold, spec, label_model)
    counts = {"categories_all": all_counts, "categories_gold": gold_counts, "multi_rated": len(multi)}
    return _planted_truth(spec, label_model, instructions, gold, facts, sim=sim, counts=counts)


def _category_plan(spec: CohortSpec) -> tuple[list, dict, dict]:
    """(category, gold) for every instruction to make, and the counts per category."""
    # Choose instruction kinds per category (Table 2 proportions), gold first.
    gold_counts = category_counts(spec.gold, "gold")
    all_counts = category_counts(spec.instructions, "all")
    # A small cohort with many gold instructions: every category needs room for its gold ones;
    # the room is taken from the largest category so the total stays as asked.
    for cat, g in gold_counts.items():
        short = g - all_counts[cat]
        if short > 0:
            all_counts[cat] = g
            all_counts["Retrieve & Summarize"] -= short
    if all_counts["Retrieve & Summarize"] < gold_counts["Retrieve & Summarize"]:
        raise ValueError(f"{spec.instructions} instructions cannot hold {spec.gold} gold ones in Table 2's proportions")
    plan = []
    for cat, n_all in all_counts.items():
        n_gold = min(gold_counts.get(cat, 0), n_all)
        plan += [(cat, True)] * n_gold + [(cat, False)] * (n_all - n_gold)
    return plan, all_counts, gold_counts


def _draw_instructions(plan: list, facts: list[PatientFacts], rng: np.random.Generator) -> list[dict]:
    """One instruction per planned slot, from a patient whose record holds its kind of fact, shuffled."""
    instructions = []
    used_ids = set()
    gate = DedupGate()
    for cat, gold in plan:
        for _ in range(400):  # a patient whose record holds this kind of fact, in words not yet used
            sub, kind = CATEGORY_KINDS[cat][int(rng.integers(0, len(CATEGORY_KINDS[cat])))]
            f = facts[int(rng.integers(0, len(facts)))]
            made = instruction_for_kind(kind, f, rng)
            if made and gate.accepts(question := vary_question(made[0], f, rng)):
                gate.add(question)
                made = (question, *made[1:])
                break
        else:
            raise RuntimeError(f"no record supports a {cat} instruction that passes the deduplication")
        iid = int(rng.integers(1_000_000_000, 9_999_999_999))
        while iid in used_ids:
            iid += 1
        used_ids.add(iid)
        q, answer, evidence, value = made
        instructions.append(
            {
                "instruction_id": str(iid),
                "person_id": f.person_id,
                "question": q,
                "category": cat,
                "subcategory": sub,
                "kind": kind,
                "gold": gold,
                "answer": answer,
                "value": value,
                "evidence": "; ".join(evidence),
                "specialty": draw_specialty(rng),
            }
        )
    order = rng.permutation(len(instructions))
    instructions = [instructions[i] for i in order]

    return instructions


def _write_instruction_table(out: Path, instructions: list[dict], rng: np.random.Generator) -> None:
    _tsv(
        out / "all-instructions-rouge.tsv",
        [
            "instruction_id",
            "person_id",
            "question",
            "category",
            "human_assigned_subcategory_1",
            "submitter_specialty",
            "max_rouge_l_to_other",
        ],
        [
            [
                r["instruction_id"],
                r["person_id"],
                r["question"],
                r["category"],
                r["subcategory"],
                r["specialty"],
                f"{rng.uniform(0.1, 0.69):.3f}",
            ]
            for r in instructions
        ],
    )


def _write_references(out: Path, gold: list[dict], rng: np.random.Generator) -> None:
    """Reference answers of the gold instructions; a quarter of them with a second annotator's paraphrase."""
    ref_rows = []
    second = set(rng.choice(len(gold), size=len(gold) // 4, replace=False).tolist()) if gold else set()
    for k, r in enumerate(gold):
        for a, text in enumerate([r["answer"]] + ([paraphrase(r["answer"], rng)] if k in second else []), start=1):
            ref_rows.append(
                [
                    r["instruction_id"],
                    r["person_id"],
                    r["question"],
                    f"Annotator_{a}",
                    text,
                    r["evidence"],
                    f"{r['person_id']}.xml",
                    r["specialty"],
                    "yes",
                    "yes",
                ]
            )
    _tsv(
        out / "clinician-instruction-responses.tsv",
        [
            "instruction_id",
            "person_id",
            "question",
            "annotator_num",
            "clinician_response",
            "evidence",
            "filename",
            "submitter_specialty",
            "is_applicable",
            "is_sufficient",
        ],
        ref_rows,
    )


def _write_responses(out: Path, gold: list[dict], spec: CohortSpec, label_model: LabelModel):
    """Six systems' responses to every gold instruction with simulated ranks and correctness (three
    raters on the multi-rated ones); returns the simulation and the multi-rated instructions."""
    n_raters = 3
    sim = simulate_labels(label_model, len(gold), np.random.default_rng([spec.seed, 4]), n_raters=n_raters)
    multi = set(
        np.random.default_rng([spec.seed, 5])
        .choice(len(gold), size=min(spec.multi_rated, len(gold)), replace=False)
        .tolist()
    )
    resp_rows = []
    style_rng = np.random.default_rng([spec.seed, 6])
    for k, r in enumerate(gold):
        texts = [
            perturb_answer(r["answer"], float(sim.latent[k, m]), bool(sim.base_correct[k, m]), m, rng=style_rng)
            for m in range(len(label_model.models))
        ]
        for rater in range(n_raters if k in multi else 1):
            for m, model in enumerate(label_model.models):
                resp_rows.append(
                    [
                        r["instruction_id"],
                        r["question"],
                        r["person_id"],
                        f"{r['person_id']}.xml",
                        r["answer"],
                        r["evidence"],
                        model,
                        texts[m],
                        f"{sim.rank[rater, k, m]:g}",  # averaged ties: 2.5
                        int(sim.correct[rater, k, m]),
                        "yes",
                        r["specialty"],
                        f"Annotator_{rater + 1}",
                    ]
                )
    _tsv(
        out / "clinician-reviewed-model-responses.tsv",
        (
            "instruction_id question person_id filename clinician_response evidence model_name model_response "
            "model_rank binary_correct is_used_eval submitter_specialty annotator_num"
        ).split(),
        resp_rows,
    )

    return sim, multi


def _planted_truth(spec, label_model, instructions, gold, facts, *, sim, counts: dict) -> dict:
    # Planted truth: the label model, its expected statistics, and per-instruction facts.
    early_late = []
    for r in instructions:
        f = next(x for x in facts if x.person_id == r["person_id"])
        ts0, ts1 = datetime.strptime(f.first_ts, "%Y-%m-%d %H:%M"), datetime.strptime(f.last_ts, "%Y-%m-%d %H:%M")
        ev = datetime.strptime(r["evidence"].split("; ")[0], "%Y-%m-%d %H:%M")
        early_late.append((ev - ts0) / max(ts1 - ts0, timedelta(minutes=1)))
    return {
        "generator": {
            "name": "medalign_utils.synthetic",
            "version": GENERATOR_VERSION,
            "seed": spec.seed,
            "spec": spec.__dict__,
        },
        "label_model": {**label_model.to_dict(), "tie_convention": TIE_CONVENTION},
        "expected_table3": expected_table3(label_model),
        "expected_inter_rater_tau": round(expected_inter_rater_tau(label_model), 4),
        "instructions": {
            "total": len(instructions),
            "gold": len(gold),
            "multi_rated": counts["multi_rated"],
            "categories_all": counts["categories_all"],
            "categories_gold": counts["categories_gold"],
            "evidence_position_quantiles": np.quantile(early_late, [0.1, 0.25, 0.5, 0.75, 0.9]).round(3).tolist(),
        },
        # Each reviewed response's latent quality (what its text and its clinician ranks follow):
        # the planted signal a test judge scores from (`evaluation.judge.planted_judge`).
        "response_quality": {
            r["instruction_id"]: {m: round(float(sim.latent[k, j]), 4) for j, m in enumerate(label_model.models)}
            for k, r in enumerate(gold)
        },
        "answers": {
            r["instruction_id"]: {
                "kind": r["kind"],
                "answer": r["answer"],
                "evidence": r["evidence"],
                "value": r["value"],
            }
            for r in instructions
        },
    }


def _readme(spec: CohortSpec, truth: dict) -> str:
    rec = truth["records"]
    return f"""# Synthetic MedAlign cohort

Made by `medalign synth` (medalign_utils.synthetic, generator version {GENERATOR_VERSION}), seed {spec.seed}.
Nothing here comes from a patient: records, notes, instructions and answers are drawn from vocabularies
and templates written in the project.

- {rec["patients"]} patients, {rec["events"]:,} events, {rec["notes"]:,} notes, {rec["xml_bytes"] / 1e6:.1f} MB of LUMIA XML in `ehrs/`.
- {truth["instructions"]["total"]} instructions in `all-instructions-rouge.tsv`; {truth["instructions"]["gold"]} with clinician
  reference answers (`clinician-instruction-responses.tsv`) and six systems' responses
  (`clinician-reviewed-model-responses.tsv`), {truth["instructions"]["multi_rated"]} of them reviewed by three clinicians
  (`annotator_num`).
- Reference answers are derived from the records; `evidence` lists the entry timestamps where each answer lives.
- `planted_truth.json` holds the label model, the expected Table 3 statistics under it (Monte Carlo), the expected
  inter-rater Kendall's tau, and each instruction's answer kind: what the analyses should recover.
"""
