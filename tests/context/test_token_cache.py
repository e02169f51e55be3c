"""The tokenization pass and its cache: lines shared across records encoded once, the result equal
to encoding each whole record; one read of each record for every tokenizer; a compact cache that
round-trips exactly; and the grid's prompts pinned to what they were before any of this."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from medalign_utils.context import (
    STRATEGIES,
    GridSettings,
    LineTokens,
    TokenizedText,
    build_prompt_grid,
    load_tokenizer,
    load_tokens,
    materialize_prompts,
    pretokenize,
    record_token_counts,
    save_tokens,
    split_at_line_starts,
    tokenize_file,
)
from medalign_utils.data import load_release

TRICKY = (
    '<a>\n<b x="é">naïve café 😀😀 日本語</b>\n<c>\r\n<d><|im_start|>user\n<|endoftext|></d>\n<e>  \n<f>\t</f>\n'
    "<g>   trailing spaces   \n<h>\n\n\n<i>no newline at the end"
)


@pytest.fixture(scope="module", params=["cl100k", "smollm2"])
def tokenizer(request):
    return load_tokenizer(request.param)


@pytest.fixture(scope="module")
def release(tiny_cohort):
    return load_release(tiny_cohort)


def test_every_record_and_awkward_text_equals_its_whole_encode(tokenizer, release):
    texts = [release.ehr_text(pid) for pid in sorted(release.ehr_files)] + [TRICKY * 7, TRICKY]
    fresh = load_tokenizer(tokenizer.spec)  # a new line memory: every record after the first shares lines
    for text in texts:
        tt = fresh.tokenize_with_offsets(text)
        assert tt.ids.tolist() == tokenizer.encode(text)
        assert (np.diff(tt.char_offsets) >= 0).all() and tt.char_offsets[0] == 0
        starts = np.flatnonzero(tt.starts_char)  # every character-start token decodes from its offset on
        for a, b in zip(starts[:: max(1, len(starts) // 50)], starts[1 :: max(1, len(starts) // 50)]):
            assert tokenizer.decode(tt.ids[a:b]) == text[tt.char_offsets[a] : tt.char_offsets[b]]


def test_a_line_seen_in_an_earlier_record_is_not_encoded_again(release, monkeypatch):
    tok = load_tokenizer("smollm2")
    encoded = []
    original = type(tok)._encode_lines
    monkeypatch.setattr(type(tok), "_encode_lines", lambda self, lines: encoded.extend(lines) or original(self, lines))
    pids = sorted(release.ehr_files)
    texts = [release.ehr_text(pid) for pid in pids]
    for text in texts:
        tok.tokenize_with_offsets(text)
    distinct = set().union(*(split_at_line_starts(t, 1) for t in texts))
    assert sorted(encoded) == sorted(distinct)  # each distinct line of the cohort once
    assert len(encoded) < sum(len(set(split_at_line_starts(t, 1))) for t in texts)  # records share lines


def test_the_line_memory_starts_afresh_past_its_cap_and_stays_exact(release):
    tok = load_tokenizer("cl100k")
    memory = LineTokens(tok, max_tokens=1_000)
    for pid in sorted(release.ehr_files):
        text = release.ehr_text(pid)
        assert memory.tokens_of(split_at_line_starts(text, 1)).ids.tolist() == tok.encode(text)
        assert memory.n_tokens < len(text)  # only this record's lines are held


@pytest.mark.parametrize("vocab_size,dtype", [(400, np.uint16), (50_000, np.uint16), (100_277, np.uint32)])
def test_the_cache_round_trips_exactly_in_the_smallest_id_type(tmp_path, vocab_size, dtype):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    rng = np.random.default_rng(0)
    n = 10_000
    advance = rng.integers(0, 40, n)
    advance[0] = 0
    tt = TokenizedText(
        rng.integers(0, vocab_size, n).astype(np.int32), np.cumsum(advance).astype(np.int64), rng.random(n) > 0.1
    )
    save_tokens(tmp_path / "t.arrow", tt, vocab_size=vocab_size)
    back = load_tokens(tmp_path / "t.arrow")
    assert back.ids.dtype == np.int32 and back.char_offsets.dtype == np.int64 and back.starts_char.dtype == bool
    assert np.array_equal(back.ids, tt.ids) and np.array_equal(back.char_offsets, tt.char_offsets)
    assert np.array_equal(back.starts_char, tt.starts_char)
    table = ipc.open_file(pa.py_buffer((tmp_path / "t.arrow").read_bytes())).read_all()
    assert table.column("id").type == pa.from_numpy_dtype(dtype)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_the_cache_is_small_against_the_xml_and_reads_back_what_was_tokenized(release, tmp_path):
    cache = tmp_path / "cache"
    counts = pretokenize(release.ehr_files, ["cl100k", "smollm2"], cache_dir=cache, workers=1, progress=False)
    xml = sum(p.stat().st_size for p in release.ehr_files.values())
    cached = sum(p.stat().st_size for p in cache.glob("tokens/*/*.arrow"))
    assert len(list(cache.glob("tokens/*/*.arrow"))) == 2 * len(release.ehr_files)
    assert cached <= 4 * xml, (cached, xml)
    for name in ("cl100k", "smollm2"):
        tok = load_tokenizer(name)
        for pid, path in release.ehr_files.items():
            tt = tokenize_file(tok, path, cache)  # from the cache
            assert tt.ids.tolist() == tok.encode(release.ehr_text(pid))
            row = counts[(counts.tokenizer == name) & (counts.person_id == pid)].iloc[0]
            assert row.n_tokens == len(tt) and row.n_chars == tt.char_offsets[-1] + 1


def test_every_tokenizer_reads_each_record_once(release, tmp_path, monkeypatch):
    import medalign_utils.data.ehr as ehr

    reads = []
    original = ehr.read_ehr_text
    monkeypatch.setattr(ehr, "read_ehr_text", lambda path: reads.append(str(path)) or original(path))
    toks = [load_tokenizer("cl100k"), load_tokenizer("smollm2")]
    counts = record_token_counts(release.ehr_files, toks, cache_dir=tmp_path, progress=False, workers=1)
    assert sorted(reads) == sorted(str(p) for p in release.ehr_files.values())
    assert list(counts.columns) == ["person_id", "tokenizer", "n_tokens", "n_chars"]
    assert list(counts.tokenizer) == ["cl100k"] * len(release.ehr_files) + ["smollm2"] * len(release.ehr_files)
    reads.clear()
    again = record_token_counts(release.ehr_files, toks, cache_dir=tmp_path, progress=False, workers=1)
    assert reads == [] and again.equals(counts)  # all from the cache


# sha256 of every prompt of the grid below (all strategies, 2k/4k/8k, both tokenizers, on the
# `tiny_cohort` fixture) and of the records' token arrays, as the suite gave them before the
# tokenization pass and cache were rebuilt for speed (issue 23). Pinned: a change to the
# tokenization, the budget or the strategies that changes a single prompt byte is seen here.
PINNED = {
    "cl100k_tokens": "773fd0eaeb424f964e3f78b9f137f98b3a3ba4bc9e3d95b198519c2d808a5bea",
    "cl100k_prompts": "3f3a39b3c1c1bd15ea364930d007eaed680139deaba48fe7cfe6ad48de323463",
    "smollm2_tokens": "215e88d7fdc216de5bfb78657e7ede4969e1fb8349523352d2fddccb0749765c",
    "smollm2_prompts": "03b2f369192bba2d88ce8f8450cdf26fc08cfa9b5e270c1afbdb909c4aca7c4a",
}


@pytest.mark.parametrize("name", ["cl100k", "smollm2"])
def test_tokens_and_prompts_are_byte_identical_to_before(release, tmp_path, name):
    tok, cl100k = load_tokenizer(name), load_tokenizer("cl100k")
    h = hashlib.sha256()
    for pid in sorted(release.ehr_files):
        tt = tokenize_file(tok, release.ehr_files[pid], tmp_path)
        h.update(tt.ids.astype("<i4").tobytes())
        h.update(tt.char_offsets.astype("<i8").tobytes())
        h.update(tt.starts_char.tobytes())
    assert h.hexdigest() == PINNED[f"{name}_tokens"]
    settings = GridSettings((2048, 4096, 8192), tuple(STRATEGIES))
    grid = build_prompt_grid(release, tok, settings, cache_dir=tmp_path, progress=False, cl100k=cl100k)
    h = hashlib.sha256()
    for prompt in materialize_prompts(grid, release, tok).prompt:
        h.update((prompt if isinstance(prompt, str) else "<none>").encode())
        h.update(b"\0")
    assert h.hexdigest() == PINNED[f"{name}_prompts"]


def test_an_unreadable_cache_file_is_made_again(release, tmp_path):
    tok = load_tokenizer("cl100k")
    pid = sorted(release.ehr_files)[0]
    first = tokenize_file(tok, release.ehr_files[pid], tmp_path)
    (target,) = tmp_path.glob("tokens/*/*.arrow")
    target.write_bytes(b"not an arrow file")
    again = tokenize_file(tok, release.ehr_files[pid], tmp_path)
    assert again.ids.tolist() == first.ids.tolist() and load_tokens(target).ids.tolist() == first.ids.tolist()
