"""Automated metrics as small objects that record their settings, like sacrebleu's signatures.

Every metric scores one response against its reference(s): ``metric.score(hyps, refs)`` takes a
list of responses and, for each, a list of references, and returns one score per response, higher
is better. With several references a metric scores each and combines them by `multi_ref`
("max" or "mean"). ``metric.signature()`` gives the settings and library versions that made a
score, as a value object (`MetricSignature`: equal signatures, comparable scores);
``metric.available`` / ``metric.reason`` say whether it can run here (METEOR without WordNet, COMET
without a checkpoint) instead of silently returning zeros.

Each metric is registered once with what the rest of the suite needs to know of it
(`register_metric`: whether it is in the default set, whether it needs the EHR source, its
direction): rougeL, bleu, chrf, chrf++, google_bleu, meteor, bertscore, src_embed
(source-augmented, the paper's COMET-with-EHR-snippets idea with the offline encoder), and comet
(an optional extra, not in the default set). `metric_names()` lists them; nothing else keeps a
list of metric names.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

_WORD = re.compile(r"\w+|[^\w\s]")


def whitespace_tokens(text: str) -> list[str]:
    """Tokens split on white space, case kept (the MedAlign authors' lineage: TIMER's ROUGE-L)."""
    return text.split()


def tokens_13a(text: str) -> list[str]:
    """sacrebleu's 13a tokens, case kept (what Hugging Face `evaluate`'s google_bleu uses)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text).split()


def nltk_word_tokens(text: str) -> list[str]:
    """nltk's `word_tokenize`, one line at a time (`preserve_line=True`): the Treebank word tokenizer
    without Punkt sentence splitting, whose model is a download the suite never makes. It differs
    from the default call only where a sentence-final period inside the text stays on its word."""
    from nltk.tokenize import word_tokenize

    return word_tokenize(text, preserve_line=True)


# Tokenizer name -> function, for the metrics that take one.
TOKENIZERS = {"simple": None, "whitespace": whitespace_tokens, "13a": tokens_13a, "nltk_word": nltk_word_tokens}


class _Tokenize:
    """A rouge-score tokenizer object from a tokens function."""

    def __init__(self, fn):
        self.tokenize = fn


def simple_tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (METEOR's and GoogleBLEU's tokenization here: nltk's
    word_tokenize would need the punkt download)."""
    return _WORD.findall(text.lower())


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _tokenizer(name: str):
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name] or simple_tokens


@dataclass(frozen=True)
class MetricSignature:
    """What made a metric's scores (sacrebleu's `Signature`): its name, preset, settings and the
    library version. Two scores are comparable when their signatures are equal; `str()` is the
    one-line form reports print (``metric:chrf++|preset:paper|multi_ref:max|nc:6|...``)."""

    metric: str
    preset: str | None
    settings: tuple[tuple[str, object], ...]
    version: str | None = None

    def to_dict(self) -> dict:
        out = {"metric": self.metric, **({"preset": self.preset} if self.preset else {}), **dict(self.settings)}
        return {**out, **({"version": self.version} if self.version else {})}

    def __str__(self) -> str:
        return "|".join(f"{k}:{v}" for k, v in self.to_dict().items())


class Metric:
    """Base class: subclasses set `name`, `library`, and implement `_pair(hyp, ref) -> float` or
    override `score`. `_SIGNATURE_TYPE` is the value object its `signature()` returns. As in
    sacrebleu, each setting's default is a class attribute in capitals (`Metric.MULTI_REF`,
    `RougeL.USE_STEMMER`, ...), which its constructor keyword takes: a reader sees a metric's
    defaults without building it (BERTScore's loads an encoder)."""

    _SIGNATURE_TYPE = MetricSignature
    MULTI_REF = "max"  # how a response's several references combine: "max" or "mean"

    name = "metric"
    library = ""
    available = True
    reason = ""

    def __init__(self, multi_ref: str = MULTI_REF):
        if multi_ref not in ("max", "mean"):
            raise ValueError(f"multi_ref must be 'max' or 'mean', not {multi_ref!r}")
        self.multi_ref = multi_ref

    def settings(self) -> dict:
        return {"multi_ref": self.multi_ref}

    preset = None  # set by make_metric

    def signature(self) -> MetricSignature:
        version = f"{self.library} {_version(self.library)}" if self.library else None
        return self._SIGNATURE_TYPE(self.name, self.preset, tuple(self.settings().items()), version)

    def signature_str(self) -> str:
        return str(self.signature())

    def _pair(self, hyp: str, ref: str) -> float:
        raise NotImplementedError

    def score(self, hyps: list[str], refs: list[list[str]], progress: bool = False) -> np.ndarray:
        if not self.available:
            raise RuntimeError(f"{self.name} is unavailable: {self.reason}")
        _check_lengths(hyps, refs)
        agg = np.max if self.multi_ref == "max" else np.mean
        return np.array(
            [
                agg([self._pair(h, r) for r in rs]) if rs else np.nan
                for h, rs in tqdm(list(zip(hyps, refs)), desc=self.name, disable=not progress)
            ]
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature_str()})"


def _check_lengths(hyps, refs) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} responses but {len(refs)} reference lists")


class RougeL(Metric):
    """ROUGE-L F-measure (rouge-score). The suite's settings: its default tokenizer (lower case,
    punctuation dropped) with the Porter stemmer; the `paper` preset: white-space tokens, case
    kept, no stemmer."""

    name, library = "rougeL", "rouge-score"
    USE_STEMMER, TOKENIZER = True, "default"

    def __init__(self, multi_ref: str = Metric.MULTI_REF, use_stemmer: bool = USE_STEMMER, tokenizer: str = TOKENIZER):
        super().__init__(multi_ref)
        from rouge_score import rouge_scorer

        self.use_stemmer, self.tokenizer = use_stemmer, tokenizer
        tok = None if tokenizer == "default" else _Tokenize(_tokenizer(tokenizer))
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer, tokenizer=tok)

    def settings(self):
        return {**super().settings(), "stemmer": self.use_stemmer, "tok": self.tokenizer}

    def _pair(self, hyp, ref):
        return self._scorer.score(ref, hyp)["rougeL"].fmeasure


class Bleu(Metric):
    """Sentence BLEU (sacrebleu, effective order), scaled to 0-1."""

    name, library = "bleu", "sacrebleu"

    def __init__(self, multi_ref: str = Metric.MULTI_REF):
        super().__init__(multi_ref)
        from sacrebleu.metrics import BLEU

        self._bleu = BLEU(effective_order=True)

    def settings(self):
        b = self._bleu
        own = {"tok": b.tokenizer_signature, "smooth": b.smooth_method, "effective_order": True}
        return {**super().settings(), **own, "case": "lc" if b.lowercase else "mixed"}

    def _pair(self, hyp, ref):
        return self._bleu.sentence_score(hyp, [ref]).score / 100


class Chrf(Metric):
    """chrF (word_order=0) or chrF++ (word_order=2: character n-grams plus word uni- and bigrams)."""

    library = "sacrebleu"
    WORD_ORDER = 2  # chrF++; 0 is chrF

    def __init__(self, word_order: int = WORD_ORDER, multi_ref: str = Metric.MULTI_REF):
        super().__init__(multi_ref)
        from sacrebleu.metrics import CHRF

        self.word_order = word_order
        self.name = "chrf++" if word_order == 2 else "chrf" if word_order == 0 else f"chrf_w{word_order}"
        self._chrf = CHRF(word_order=word_order)

    def settings(self):
        c = self._chrf
        case = "lc" if c.lowercase else "mixed"
        return {
            **super().settings(),
            "nc": c.char_order,
            "nw": c.word_order,
            "beta": c.beta,
            "space": c.whitespace,
            "case": case,
        }

    def _pair(self, hyp, ref):
        return self._chrf.sentence_score(hyp, [ref]).score / 100


class GoogleBleu(Metric):
    """Google BLEU (GLEU, Wu et al. 2016) from nltk, n-grams 1-4, on `simple_tokens` (the suite's) or
    sacrebleu's 13a tokens with case kept (the `paper` preset)."""

    name, library = "google_bleu", "nltk"
    TOKENIZER = "simple"

    def __init__(self, multi_ref: str = Metric.MULTI_REF, tokenizer: str = TOKENIZER):
        super().__init__(multi_ref)
        self.tokenizer, self._tok = tokenizer, _tokenizer(tokenizer)

    def settings(self):
        return {**super().settings(), "tok": self.tokenizer}

    def _pair(self, hyp, ref):
        from nltk.translate.gleu_score import sentence_gleu

        return sentence_gleu([self._tok(ref)], self._tok(hyp), min_len=1, max_len=4)


class Meteor(Metric):
    """METEOR (nltk, WordNet 3.0 synonyms installed offline by `medalign setup`). Unavailable, with
    the reason, where WordNet is absent: never silently zero."""

    name, library = "meteor", "nltk"
    TOKENIZER = "simple"

    def __init__(self, multi_ref: str = Metric.MULTI_REF, tokenizer: str = TOKENIZER):
        super().__init__(multi_ref)
        from ..assets import wordnet_status

        self.tokenizer, self._tok = tokenizer, _tokenizer(tokenizer)
        self.available, self.reason = wordnet_status()
        if self.available:
            self.reason = ""

    def settings(self):
        return {**super().settings(), "wordnet": "3.0", "tok": self.tokenizer}

    def _pair(self, hyp, ref):
        from nltk.translate.meteor_score import meteor_score

        return meteor_score([self._tok(ref)], self._tok(hyp))


# ------------------------------------------------------------------ embeddings (BERTScore and friends)


class Encoder:
    """A local transformer encoder that embeds each distinct text once (token embeddings of one
    layer, L2-normalised), with texts sorted by length into batches so padding stays small."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        num_layers: int | None = None,
        batch_tokens: int = 4096,
        max_length: int = 512,
        device: str | None = None,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from ..assets import minilm_path

        self.path = str(path or minilm_path())
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        n = self.model.config.num_hidden_layers
        self.num_layers = num_layers or n
        if not 1 <= self.num_layers <= n:
            raise ValueError(f"num_layers must be 1..{n} for {self.path}")
        self.batch_tokens, self.max_length = batch_tokens, max_length
        self._cache: dict[str, np.ndarray] = {}
        self._layers = [self.num_layers]  # `all_layers` widens this for baselines
        self._layer_cache: dict[int, dict[str, np.ndarray]] = {}

    def tokens(self, texts: list[str], progress: bool = False) -> list[np.ndarray]:
        """Per text, its token embeddings, each row of unit length, [CLS] first and [SEP] last (as
        bert-score keeps them: they can be matched, but are not averaged over)."""
        import torch

        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        if todo:
            enc = self.tokenizer(todo, truncation=True, max_length=self.max_length, add_special_tokens=True)
            lengths = [len(ids) for ids in enc["input_ids"]]
            order = np.argsort(lengths, kind="stable")
            batches, cur, cur_max = [], [], 0
            for i in order:  # length-sorted batches capped by padded token count
                if cur and max(cur_max, lengths[i]) * (len(cur) + 1) > self.batch_tokens:
                    batches.append(cur)
                    cur, cur_max = [], 0
                cur.append(i)
                cur_max = max(cur_max, lengths[i])
            if cur:
                batches.append(cur)
            with torch.inference_mode():
                for b in tqdm(batches, desc="embedding", disable=not progress):
                    feats = self.tokenizer.pad({"input_ids": [enc["input_ids"][i] for i in b]}, return_tensors="pt")
                    out = self.model(
                        input_ids=feats["input_ids"].to(self.device),
                        attention_mask=feats["attention_mask"].to(self.device),
                        output_hidden_states=True,
                    )
                    for layer in self._layers:
                        hidden = torch.nn.functional.normalize(out.hidden_states[layer].float(), dim=-1).cpu().numpy()
                        for row, i in enumerate(b):
                            self._layer_cache.setdefault(layer, {})[todo[i]] = hidden[row, : lengths[i]]
                for t in todo:
                    self._cache[t] = self._layer_cache[self.num_layers][t]
        return [self._cache[t] for t in texts]

    def all_layers(self, texts: list[str]) -> dict[int, list[np.ndarray]]:
        """Token embeddings of every layer from one forward pass per batch (for baselines)."""
        n = self.model.config.num_hidden_layers
        self._layers = list(range(1, n + 1))
        self._cache = {}
        self.tokens(texts)
        self._layers = [self.num_layers]
        return {layer: [self._layer_cache[layer][t] for t in texts] for layer in range(1, n + 1)}

    def sentence(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Mean-pooled, unit-length sentence embeddings (all-MiniLM-L6-v2's own pooling, which
        averages every token, [CLS] and [SEP] included; the model's own vectors are not unit
        length before pooling, so this is close to, not equal to, sentence-transformers' output)."""
        out = []
        for t in self.tokens(texts, progress):
            v = t.mean(0) if len(t) else np.zeros(self.model.config.hidden_size)
            out.append(v / (np.linalg.norm(v) or 1.0))
        return np.vstack(out) if out else np.zeros((0, self.model.config.hidden_size))


_ENCODERS: dict[tuple, Encoder] = {}


def get_encoder(path=None, num_layers=None) -> Encoder:
    """One encoder per (model, layer) in a process, so metrics that share it (BERTScore and the
    source-augmented score) embed each text once."""
    from transformers import AutoConfig

    from ..assets import minilm_path

    resolved = str(path or minilm_path())
    layers = num_layers or AutoConfig.from_pretrained(resolved, local_files_only=True).num_hidden_layers
    key = (resolved, layers)
    if key not in _ENCODERS:
        _ENCODERS[key] = Encoder(resolved, num_layers=layers)
    return _ENCODERS[key]


def greedy_match(h: np.ndarray, r: np.ndarray, special_ends: bool = True) -> tuple[float, float, float]:
    """BERTScore's greedy cosine matching of unit-length token embeddings: (P, R, F1).

    With `special_ends` (the first and last rows are [CLS] and [SEP]) those rows can be matched but
    are not averaged over, exactly as bert-score weighs them (idf 0) without idf."""
    if len(h) == 0 or len(r) == 0:
        return 0.0, 0.0, 0.0
    sim = h @ r.T
    hs = slice(1, len(h) - 1) if special_ends and len(h) > 2 else slice(None)
    rs = slice(1, len(r) - 1) if special_ends and len(r) > 2 else slice(None)
    p, rc = float(sim[hs].max(1).mean()), float(sim[:, rs].max(0).mean())
    return p, rc, (2 * p * rc / (p + rc) if p + rc > 0 else 0.0)


BASELINE_FILE = Path(__file__).parent / "resources" / "bertscore_baseline_all-MiniLM-L6-v2.tsv"


def load_baseline(path: Path = BASELINE_FILE) -> dict[int, tuple[float, float, float]]:
    """{layer: (P, R, F)} from a baseline file (columns LAYER, P, R, F as in bert-score's files)."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("LAYER"):
            layer, p, r, f = line.split("\t")[:4]
            out[int(layer)] = (float(p), float(r), float(f))
    return out


class BertScore(Metric):
    """BERTScore F1 (or P/R) with a local encoder; all-MiniLM-L6-v2 from its package by default.

    Each distinct text is embedded once (references are shared by six responses), texts sorted
    by length into batches; matching as in bert-score (greedy cosine, no idf). `rescale` uses the
    project's baseline for the default encoder (see `compute_baseline`).
    """

    name, library = "bertscore", "transformers"
    NUM_LAYERS = None  # None: the encoder's own default layer
    RESCALE, PART = False, "F"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        num_layers: int | None = NUM_LAYERS,
        rescale: bool = RESCALE,
        part: str = PART,
        multi_ref: str = Metric.MULTI_REF,
    ):
        super().__init__(multi_ref)
        self.encoder = get_encoder(model_path, num_layers)
        self.part, self.rescale = part, rescale
        self.baseline = None
        if rescale:
            base = load_baseline() if model_path is None else {}
            if self.encoder.num_layers not in base:
                raise ValueError(
                    f"no rescale baseline for {self.encoder.path} layer {self.encoder.num_layers}: "
                    "compute one with medalign_utils.metrics.compute_baseline"
                )
            self.baseline = base[self.encoder.num_layers]

    def settings(self):
        return {
            **super().settings(),
            "model": Path(self.encoder.path).name,
            "layer": self.encoder.num_layers,
            "idf": False,
            "part": self.part,
            "rescaled": self.rescale,
        }

    def score_prf(self, hyps, refs, progress=False) -> np.ndarray:
        """(n, 3) array of P, R, F, each the best (or mean) over a response's references."""
        _check_lengths(hyps, refs)
        flat_refs = [r for rs in refs for r in rs]
        emb = dict(zip(list(hyps) + flat_refs, self.encoder.tokens(list(hyps) + flat_refs, progress)))
        out = np.zeros((len(hyps), 3))
        for i, (h, rs) in enumerate(zip(hyps, refs)):
            prf = np.array([greedy_match(emb[h], emb[r]) for r in rs]) if rs else np.full((1, 3), np.nan)
            if self.baseline is not None:
                prf = (prf - np.array(self.baseline)) / (1 - np.array(self.baseline))
            out[i] = prf[np.argmax(prf[:, 2])] if self.multi_ref == "max" else prf.mean(0)
        return out

    def score(self, hyps, refs, progress=False):
        return self.score_prf(hyps, refs, progress)[:, "PRF".index(self.part)]


class SourceEmbedding(Metric):
    """Source-augmented score, the paper's COMET-with-EHR-snippets idea with the offline encoder:
    the mean of cos(response, reference) and cos(response, source), sentence embeddings of
    all-MiniLM-L6-v2, where the source is the BM25 best EHR snippets for the instruction. Without
    sources it reduces to cos(response, reference)."""

    name, library = "src_embed", "transformers"
    SOURCE_WEIGHT = 0.5

    def __init__(self, model_path=None, source_weight: float = SOURCE_WEIGHT, multi_ref: str = Metric.MULTI_REF):
        super().__init__(multi_ref)
        self.encoder = get_encoder(model_path, None)
        self.source_weight = source_weight

    def settings(self):
        return {
            **super().settings(),
            "model": Path(self.encoder.path).name,
            "source_weight": self.source_weight,
            "source": "BM25 EHR snippets",
        }

    def score(self, hyps, refs, progress=False, sources: list[str] | None = None):
        _check_lengths(hyps, refs)
        flat = list(hyps) + [r for rs in refs for r in rs] + [s for s in (sources or []) if s]
        vec = dict(zip(flat, self.encoder.sentence(flat, progress)))
        agg = np.max if self.multi_ref == "max" else np.mean
        out = []
        for i, (h, rs) in enumerate(zip(hyps, refs)):
            ref_sim = agg([float(vec[h] @ vec[r]) for r in rs]) if rs else np.nan
            src = sources[i] if sources else ""
            out.append(
                (1 - self.source_weight) * ref_sim + self.source_weight * float(vec[h] @ vec[src]) if src else ref_sim
            )
        return np.array(out)


class Comet(Metric):
    """COMET (unbabel-comet) with a local checkpoint: an optional extra, unavailable otherwise."""

    name, library = "comet", "unbabel-comet"
    BATCH_SIZE = 16

    def __init__(
        self, checkpoint: str | Path | None = None, multi_ref: str = Metric.MULTI_REF, batch_size: int = BATCH_SIZE
    ):
        super().__init__(multi_ref)
        self.checkpoint, self.batch_size = checkpoint or os.environ.get("MEDALIGN_COMET_CHECKPOINT"), batch_size
        try:
            import comet  # noqa: F401
        except ImportError:
            self.available, self.reason = False, "unbabel-comet is not installed (pip install '.[comet]')"
            return
        if not self.checkpoint or not Path(self.checkpoint).exists():
            self.available, self.reason = (
                False,
                "no local COMET checkpoint (set MEDALIGN_COMET_CHECKPOINT to a .ckpt file)",
            )

    def score(self, hyps, refs, progress=False, sources: list[str] | None = None):
        if not self.available:
            raise RuntimeError(f"comet is unavailable: {self.reason}")
        from comet import load_from_checkpoint

        model = load_from_checkpoint(str(self.checkpoint))
        data = [
            {"src": (sources[i] if sources else ""), "mt": h, "ref": rs[0] if rs else ""}
            for i, (h, rs) in enumerate(zip(hyps, refs))
        ]
        return np.array(model.predict(data, batch_size=self.batch_size, gpus=0, progress_bar=progress).scores)


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric: how to make it, and what the suite needs to know of it."""

    name: str
    factory: Callable[..., Metric]
    default: bool = True  # in the default set (`medalign table4` without --metrics)
    needs_source: bool = False  # scores against the EHR source (BM25 snippets) as well as the reference
    higher_is_better: bool = True  # Table 4 turns a lower-is-better score around


_REGISTRY: dict[str, MetricInfo] = {}


def register_metric(
    name: str,
    factory: Callable[..., Metric],
    *,
    default: bool = True,
    needs_source: bool = False,
    higher_is_better: bool = True,
) -> MetricInfo:
    """Make a metric known by name (to `make_metric`, Table 4, notebook 05 and the CLI)."""
    info = MetricInfo(name, factory, default, needs_source, higher_is_better)
    _REGISTRY[name] = info
    return info


def metric_info(name: str) -> MetricInfo:
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def metric_names(*, default: bool | None = None, needs_source: bool | None = None) -> list[str]:
    """The registered metrics' names in registration order (only the default ones, or those that
    need the source, when asked)."""
    return [
        n
        for n, m in _REGISTRY.items()
        if (default is None or m.default == default) and (needs_source is None or m.needs_source == needs_source)
    ]


for _name, _factory, _options in (
    ("rougeL", RougeL, {}),
    ("bleu", Bleu, {}),
    ("chrf", lambda **kw: Chrf(word_order=0, **kw), {}),
    ("chrf++", lambda **kw: Chrf(word_order=2, **kw), {}),
    ("google_bleu", GoogleBleu, {}),
    ("meteor", Meteor, {}),
    ("bertscore", BertScore, {}),
    ("src_embed", SourceEmbedding, {"needs_source": True}),
    ("comet", Comet, {"needs_source": True, "default": False}),  # an optional extra: no checkpoint offline
):
    register_metric(_name, _factory, **_options)


# Named settings. `paper`: the MedAlign authors' metric lineage (TIMER's scripts, through Hugging
# Face `evaluate`): ROUGE-L on white-space tokens with case kept and no stemmer, METEOR on nltk's
# word tokens, GoogleBLEU on sacrebleu's 13a tokens with case kept. `suite`: lower case,
# punctuation split off, Porter stemmer for ROUGE-L. Table 4 uses `paper` (it is the paper's table).
PRESETS = {
    "paper": {
        "rougeL": {"use_stemmer": False, "tokenizer": "whitespace"},
        "meteor": {"tokenizer": "nltk_word"},
        "google_bleu": {"tokenizer": "13a"},
    },
    "suite": {},
}
DEFAULT_PRESET = "paper"


def make_metric(name: str, preset: str = DEFAULT_PRESET, **kwargs) -> Metric:
    """A metric by registry name with a preset's settings (explicit `kwargs` win); its signature
    records the preset."""
    info = metric_info(name)
    if preset not in PRESETS:
        raise ValueError(f"unknown metric preset {preset!r}; known: {', '.join(PRESETS)}")
    metric = info.factory(**{**PRESETS[preset].get(name, {}), **kwargs})
    metric.preset = preset
    return metric


# ------------------------------------------------------------------ the rescale baseline


def baseline_sentences(n: int = 2000, seed: int = 0) -> list[str]:
    """English sentences from the Python standard library's docstrings: plentiful, offline, and
    unrelated to clinical text, so random pairs of them are genuinely unrelated."""
    import importlib
    import pkgutil

    sentences = []
    for mod in sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith("_")):
        if mod in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"):
            continue
        try:
            module = importlib.import_module(mod)
        except Exception:
            continue
        for obj in [module, *(getattr(module, a, None) for a in sorted(dir(module)) if not a.startswith("_"))]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str):
                for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 8 <= len(s.split()) <= 40 and s[0].isupper() and "=" not in s and ">>>" not in s:
                        sentences.append(s)
        if len(set(sentences)) > 5 * n:
            break
    uniq = sorted(set(sentences))
    rng = np.random.default_rng(seed)
    return [uniq[i] for i in rng.choice(len(uniq), size=min(n, len(uniq)), replace=False)]


def compute_baseline(model_path=None, n_pairs: int = 1000, seed: int = 0) -> dict[int, tuple[float, float, float]]:
    """BERTScore of random pairs of unrelated sentences at every layer: the value a score is
    rescaled against (as bert-score's own baselines, which do not cover this encoder)."""
    sentences = baseline_sentences(2 * n_pairs, seed)
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(len(sentences))
    a, b = [sentences[i] for i in perm[: len(perm) // 2]], [sentences[i] for i in perm[len(perm) // 2 :]]
    layers = get_encoder(model_path).all_layers(a + b)
    out = {}
    for layer, emb in layers.items():
        prf = np.array([greedy_match(x, y) for x, y in zip(emb[: len(a)], emb[len(a) :])])
        out[layer] = tuple(float(v) for v in prf.mean(0).round(6))
    return out


def write_baseline(baseline: dict, path: Path = BASELINE_FILE, note: str = "") -> None:
    lines = [f"# {note}" if note else "", "LAYER\tP\tR\tF"] + [
        f"{k}\t{p}\t{r}\t{f}" for k, (p, r, f) in sorted(baseline.items())
    ]
    path.write_text("\n".join(x for x in lines if x) + "\n")
