"""BM25 over pieces of a record: the one index behind retrieval truncation (encounters), the
source snippets of source-augmented metrics (entries), and the extractive baseline (sentences).

bm25s with English stop words; an index is built once per record and queried per instruction.
"""

from __future__ import annotations

import re

import numpy as np

_MARKUP = re.compile(r"[<>=/\"]+")
_ENTRY = re.compile(r"<(entry|note|code)\b.*?</\1>", re.S)


def plain_text(xml: str) -> str:
    """Record text without markup characters, for BM25 (attribute values such as names and codes
    are kept as words)."""
    return _MARKUP.sub(" ", xml)


class BM25Index:
    """BM25 over a list of documents. `scores(query)` gives one score per document (zeros when the
    query has no indexable word); `top(query, k)` the indices of the k best with a positive score."""

    def __init__(self, docs: list[str]):
        import bm25s

        self.n_docs = len(docs)
        self._bm25 = bm25s.BM25()
        if docs:
            self._bm25.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        import bm25s

        q = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
        if not q or not self.n_docs:
            return np.zeros(self.n_docs)
        return np.asarray(self._bm25.get_scores(q), dtype=float)

    def top(self, query: str, k: int) -> list[int]:
        scores = self.scores(query)
        return [int(i) for i in np.argsort(-scores, kind="stable")[:k] if scores[i] > 0]


class SnippetIndex(BM25Index):
    """BM25 over a record's entries (LUMIA) or notes and codes (paper-era), markup removed: built
    once per record, asked per question (`snippets`)."""

    def __init__(self, text: str):
        spans = [(m.start(), m.end()) for m in _ENTRY.finditer(text)]
        self.docs = [" ".join(plain_text(re.sub(r"\s+", " ", text[a:b])).split()) for a, b in spans]
        super().__init__(self.docs)

    def snippets(self, question: str, k: int = 3) -> list[str]:
        """The k pieces BM25 ranks best for `question` (fewer when fewer score above zero)."""
        return [self.docs[i] for i in self.top(question, k)]


def bm25_snippets(text: str, question: str, k: int = 3) -> list[str]:
    """The k entries (LUMIA) or notes and codes (paper-era) of a record that BM25 ranks best for a
    question, markup removed: the 'source' the paper gave COMET. For many questions over one record,
    build its `SnippetIndex` once."""
    return SnippetIndex(text).snippets(question, k)


def record_sentences(ehr_text: str) -> list[str]:
    """The distinct sentences of a record's text (markup removed, three words or more), in order:
    what the extractive baseline chooses from."""
    plain = re.sub(r"<[^>]+>", "\n", ehr_text)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", plain) if len(s.strip().split()) >= 3]
    return list(dict.fromkeys(sentences))
