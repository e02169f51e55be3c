"""Helpers the tests share that are not fixtures: the checkout, the public sample, small cohort specs, a tiny
language model made from a config, and notebooks written from source."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PUBLIC_SAMPLE = SHARED / "medalign-public-sample"


def small_spec(patients: int = 4, instructions: int = 40, gold: int = 14, seed: int = 0, multi_rated: int = 5):
    from medalign_utils.synthetic import CohortSpec

    # Short records (median ~8k tokens) keep fixtures fast; the shape of everything else is kept.
    return CohortSpec(
        patients=patients,
        instructions=instructions,
        gold=gold,
        multi_rated=multi_rated,
        seed=seed,
        length_log_median=9.0,
        length_log_sigma=0.6,
        min_tokens=3000,
        max_tokens=40_000,
    )


def make_tiny_lm(path: Path, chat_template: bool = False) -> Path:
    """A tiny Llama-style causal LM (random weights, seed 0) with a small byte-level BPE tokenizer
    trained here, saved as a local Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [
        "Instruction: Answer the following question based on the EHR:",
        "Question: What was the last glucose?",
        '<entry timestamp="2020-01-01 08:00"><event type="measurement" name="Glucose">104.00</event></entry>',
        "The patient has hypertension and takes lisinopril 10 MG daily.",
    ] * 50
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<eos>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def write_notebook(path: Path, source: str, *, parameters: str = "data_dir = 'x'", reads=(), writes=()) -> None:
    """A two-cell notebook: a parameters cell (declaring data_dir, and naming the parameters that are
    files it `reads` and `writes` in its metadata, as the suite's notebooks do), then `source`."""
    import nbformat

    metadata = {"tags": ["parameters"]}
    if reads or writes:
        metadata["medalign"] = {"reads": list(reads), "writes": list(writes)}
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata=metadata), nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)


def unmark(src: Path, dst: Path, prefix: str = "PT-") -> tuple[Path, dict[str, str]]:
    """A copy of a synthetic cohort that counts as the real release: no marker, and person_ids
    rewritten with letters and a hyphen (`PT-<id>`) in every table, file name and record."""
    from medalign_utils.data import SYNTHETIC_MARKER

    shutil.copytree(src, dst)
    (dst / SYNTHETIC_MARKER).unlink()
    ids = {p.stem: f"{prefix}{p.stem}" for p in (dst / "ehrs").glob("*.xml")}
    pattern = re.compile("|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)))
    for path in [*dst.glob("*.tsv"), *(dst / "ehrs").glob("*.xml")]:
        path.write_text(pattern.sub(lambda m: ids[m.group(0)], path.read_text()))
    for old, new in ids.items():
        (dst / "ehrs" / f"{old}.xml").rename(dst / "ehrs" / f"{new}.xml")
    return dst, ids


def responses_path(root: Path) -> Path:
    return root / "clinician-reviewed-model-responses.tsv"


def template_page(folder: Path) -> str:
    """A rendered page as every page of the suite is framed (the template's stylesheet, icons and
    scripts), ending in the index page's platform line with a kernel version."""
    import nbformat

    from medalign_utils.reports.pages import render_page

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hello')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# A page\n## One\n## Two\n## Three"), cell]
    nbformat.write(nb, folder / "template.ipynb")
    render_page(folder / "template.ipynb", folder / "template.html")
    return (folder / "template.html").read_text() + "<p>python 3.11.7 on linux-6.18.44-fc-v1300-x86_64</p>"


def template_dates(folder: Path) -> set[str]:
    """Every record date the page template's numbers could form if its SVG geometry (icon path data)
    were read as text, and a kernel version string's: a cohort holding them is a false-alarm cohort."""
    from unittest import mock

    from medalign_utils.reports import scan

    reading = scan._Reading()
    with mock.patch.object(scan, "without_geometry", lambda text: text):
        scan._read(template_page(folder), reading)
    found = set().union(*map(scan._full_dates, reading.texts)) | {"1944-06-18"}
    return {d for d in found if 1900 <= int(d[:4]) <= 2099}  # dates a record can hold


def set_record_dates(ehr: Path, dates) -> None:
    """Give the first entries of a record the `dates` (their times kept)."""
    text = ehr.read_text()
    for day in sorted(dates):
        text = re.sub(r'<entry timestamp="\d{4}-\d{2}-\d{2}', f'<entry timestamp="{day}', text, count=1)
        text = text.replace(f'<entry timestamp="{day}', f'<entry timestamp="@{day}', 1)  # the next one next
    ehr.write_text(text.replace('<entry timestamp="@', '<entry timestamp="'))
