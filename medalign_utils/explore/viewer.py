"""The instance viewer: an ipywidgets browser over a release and the suite's outputs, one instruction at
a time (`viewer(data_dir)`). It shows patient text, so it runs only in the researcher's own session:
inside `medalign run`, and in any kernel the runner starts, it refuses in one line and shows nothing."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..reports.runner import RUNNER_KERNEL_MARKER
from .instances import (
    ANY,
    filter_choices,
    filter_instances,
    instance_answers,
    instance_judgments,
    instance_metrics,
    instance_table,
    strategy_views,
    system_label,
)
from .render import instance_html

REFUSAL = (
    "the instance viewer shows patient text: it runs only in your own session "
    "(JupyterLab), never inside `medalign run` or a kernel it starts"
)


class ViewerRefused(RuntimeError):
    """Raised (one line) where the viewer must not run."""


def in_runner_kernel() -> bool:
    """Whether this process is a kernel `medalign run` started: its IPython profile holds the runner's
    marker file (`reports.runner.RUNNER_KERNEL_MARKER`)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebooks' dependencies
        return False
    shell = get_ipython()
    location = getattr(getattr(shell, "profile_dir", None), "location", None)
    return bool(location) and (Path(location) / RUNNER_KERNEL_MARKER).exists()


@dataclass
class InstanceSource:
    """What the viewer reads, loaded once: the release, its instance table, and the suite's outputs."""

    release: object
    table: pd.DataFrame
    judgments: pd.DataFrame | None = None
    generations: pd.DataFrame | None = None
    tokenizer: object = None
    cache_dir: Path | None = None
    skipped: list[str] = field(default_factory=list)  # what reading the outputs left out, and why

    @classmethod
    def open(
        cls,
        data_dir,
        *,
        judgments_dir="data/judgments",
        generations_path="data/generations/generations.jsonl",
        tokenizer: str = "cl100k",
        cache_dir=None,
        follow_external_links: bool = False,
    ):
        from ..config import cache_root
        from ..context import load_tokenizer, record_token_counts
        from ..data import describe, open_release
        from ..evaluation.judge import read_judgments
        from ..generation import read_answers

        release = open_release(data_dir, follow_external_links=follow_external_links)
        cache_dir = Path(cache_dir) if cache_dir else cache_root()
        tok = load_tokenizer(tokenizer)
        counts = record_token_counts(release.ehr_files, [tok], cache_dir=cache_dir, progress=False)
        bands = describe.instruction_length_bins(release.instructions, counts)
        files = sorted(Path(judgments_dir).glob("*.jsonl")) if judgments_dir and Path(judgments_dir).is_dir() else []
        judgments = read_judgments(files) if files else None
        generations = read_answers(generations_path, missing_ok=True) if generations_path else None
        skipped = [*(judgments.attrs.get("skipped", []) if judgments is not None else [])]
        skipped += generations.attrs.get("skipped", []) if generations is not None else []
        table = instance_table(release, judgments=judgments, generations=generations, length_bands=bands)
        return cls(release, table, judgments, generations, tok, cache_dir, skipped)

    def html(self, instruction_id: str, *, context: int, strategies) -> str:
        row = self.table.set_index("instruction_id").loc[str(instruction_id)].to_dict()
        row["instruction_id"] = str(instruction_id)
        views = strategy_views(
            self.release,
            instruction_id,
            tokenizer=self.tokenizer,
            context=context,
            strategies=strategies,
            cache_dir=self.cache_dir,
        )
        answers = instance_answers(self.release, instruction_id, generations=self.generations)
        metrics = instance_metrics(self.release, instruction_id, answers=answers)
        return instance_html(
            row,
            views=views,
            answers=answers,
            metrics=metrics,
            judgments=instance_judgments(self.judgments, instruction_id),
        )


def viewer(
    data_dir="data/synthetic",
    *,
    judgments_dir="data/judgments",
    generations_path="data/generations/generations.jsonl",
    tokenizer: str = "cl100k",
    contexts=(2048, 4096, 8192, 32768),
    strategies=("recent", "oldest", "retrieval", "notes_only"),
    cache_dir=None,
):
    """The instance viewer as an ipywidgets box: filters (category, system, EHR length, disagreement),
    the instructions they match, and the chosen one (`explore.render.instance_html`). Reads the
    release at `data_dir`, notebook 06's judgments and notebook 03's answers where they exist.
    Refuses (`ViewerRefused`, one line) in a kernel `medalign run` started."""
    if in_runner_kernel():
        raise ViewerRefused(REFUSAL)
    import ipywidgets as w

    source = InstanceSource.open(
        data_dir,
        judgments_dir=judgments_dir,
        generations_path=generations_path,
        tokenizer=tokenizer,
        cache_dir=cache_dir,
    )
    choices = filter_choices(source.table)
    filters = {
        name: w.Dropdown(
            options=[(system_label(o) if name == "system" else o, o) for o in options],
            value=ANY,
            description=name.replace("_", " "),
            style={"description_width": "initial"},
        )
        for name, options in choices.items()
    }
    for name, widget in filters.items():
        widget.add_class(f"medalign-filter-{name.replace('_', '-')}")
    context = w.Dropdown(options=list(contexts), value=contexts[0], description="context")
    instruction = w.Dropdown(options=[], description="instruction", layout=w.Layout(width="95%"))
    instruction.add_class("medalign-instruction")
    count = w.HTML()
    count.add_class("medalign-count")
    shown = w.HTML()
    shown.add_class("medalign-instance")

    def refilter(_=None):
        match = filter_instances(source.table, **{k: v.value for k, v in filters.items()})
        count.value = f"<b>{len(match)}</b> of {len(source.table)} instructions match"
        instruction.options = [
            (f"{r.instruction_id} · {r.category} · {r.question[:90]}", r.instruction_id) for r in match.itertuples()
        ]
        if not len(match):
            shown.value = "<p>No instruction matches these filters.</p>"
        elif instruction.value not in set(match.instruction_id):
            instruction.value = match.instruction_id.iloc[0]  # shown by `render`, which observes it

    def render(_=None):
        if instruction.value is not None:
            shown.value = source.html(instruction.value, context=context.value, strategies=strategies)

    for widget in filters.values():
        widget.observe(refilter, names="value")
    instruction.observe(render, names="value")
    context.observe(render, names="value")
    refilter()
    notes = w.HTML("".join(f"<div><i>{html.escape(line)}</i></div>" for line in source.skipped))
    rows = [w.HBox(list(filters.values())[:2]), w.HBox([*list(filters.values())[2:], context])]
    box = w.VBox([*rows, count, instruction, notes, shown])
    box.add_class("medalign-viewer")
    return box


__all__ = ["REFUSAL", "InstanceSource", "ViewerRefused", "in_runner_kernel", "viewer"]
