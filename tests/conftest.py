"""Shared fixtures: the authors' public sample (from ../shared, never copied into the project) and
small synthetic releases made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PUBLIC_SAMPLE = SHARED / "medalign-public-sample"


@pytest.fixture(scope="session")
def public_sample() -> Path:
    if not (PUBLIC_SAMPLE / "sample-ehr-clean.xml").exists():
        pytest.skip(
            f"the dataset authors' public sample is not at {PUBLIC_SAMPLE} (only a developer checkout "
            "beside ../shared has it; CI always does)"
        )
    return PUBLIC_SAMPLE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Parsed-EHR caches go to a per-session temp folder, never to the user's home.
    monkeypatch.setenv("MEDALIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "medalign-cache"))


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


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A small synthetic release (4 patients, 40 instructions, 14 gold), made once per session."""
    from medalign_utils.synthetic import make_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    make_cohort(out, small_spec(), workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def gold_cohort(tmp_path_factory) -> Path:
    """A release with the paper's 303 gold instructions over 6 short records, for label analyses."""
    from medalign_utils.synthetic import make_cohort

    out = tmp_path_factory.mktemp("gold_cohort")
    make_cohort(
        out, small_spec(patients=6, instructions=400, gold=303, seed=1, multi_rated=50), workers=1, progress=False
    )
    return out


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


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


def write_notebook(path: Path, source: str) -> None:
    """A two-cell notebook: a parameters cell declaring data_dir, then `source`."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("data_dir = 'x'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(source),
    ]
    nbformat.write(nb, path)
