"""Metrics against hand-checked cases and their libraries called directly; correlation with clinicians."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from scipy import stats

from medalign_utils import cli, paper
from medalign_utils.assets import wordnet_status
from medalign_utils.data import load_release
from medalign_utils.evaluation import clinicians
from medalign_utils.evaluation.correlation import (
    metric_induced_labels,
    per_instruction_tau,
    rank_systems,
    score_responses,
    system_level,
    table4,
)
from medalign_utils.evaluation.metrics import (
    BertScore,
    Bleu,
    Chrf,
    GoogleBleu,
    Meteor,
    RougeL,
    SourceEmbedding,
    greedy_match,
    load_baseline,
    make_metric,
    simple_tokens,
)
from medalign_utils.stats import Bootstrap

HYP = "The most recent hemoglobin A1c was 7.2 %, on 2021-03-04."
REF = "The latest hemoglobin A1c was 7.2 % on 2021-03-04."


def test_rouge_l_hand_checked():
    # LCS of "a b c d" and "a c d e" is "a c d": P = 3/4, R = 3/4, F = 0.75.
    assert RougeL().score(["a b c d"], [["a c d e"]])[0] == pytest.approx(0.75)
    from rouge_score import rouge_scorer

    direct = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(REF, HYP)["rougeL"].fmeasure
    assert RougeL().score([HYP], [[REF]])[0] == pytest.approx(direct)


def test_chrf_plus_plus_equals_sacrebleu_word_order_2():
    ours = Chrf(word_order=2).score([HYP], [[REF]])[0]
    assert ours == pytest.approx(sacrebleu.sentence_chrf(HYP, [REF], word_order=2).score / 100)
    plain = Chrf(word_order=0).score([HYP], [[REF]])[0]
    assert plain == pytest.approx(sacrebleu.sentence_chrf(HYP, [REF]).score / 100)
    assert ours != plain  # chrF++ is not chrF
    assert "nw:2" in Chrf(word_order=2).signature_str()


def test_bleu_equals_sacrebleu_and_identity_scores_one():
    assert Bleu().score([HYP], [[REF]])[0] == pytest.approx(sacrebleu.sentence_bleu(HYP, [REF]).score / 100)
    assert Bleu().score([REF], [[REF]])[0] == pytest.approx(1.0)


def test_google_bleu_hand_checked():
    # Identical: 1; no shared n-gram: 0; hyp "a b" vs ref "a c": 1 shared of 3 n-grams either way -> 1/3.
    assert GoogleBleu().score(["a b c d"], [["a b c d"]])[0] == pytest.approx(1.0)
    assert GoogleBleu().score(["x y"], [["a b"]])[0] == 0
    assert GoogleBleu().score(["a b"], [["a c"]])[0] == pytest.approx(1 / 3)


def test_meteor_uses_wordnet_or_says_why_not():
    m = Meteor()
    ok, reason = wordnet_status()
    if not ok:
        assert not m.available and "WordNet" in m.reason
        with pytest.raises(RuntimeError, match="unavailable"):
            m.score([HYP], [[REF]])
        pytest.skip(f"WordNet is not installed here: {reason}")
    from nltk.translate.meteor_score import meteor_score

    assert m.score([HYP], [[REF]])[0] == pytest.approx(meteor_score([simple_tokens(REF)], simple_tokens(HYP)))
    # A synonym (WordNet) counts: "latest" ~ "recent" scores above an unrelated word.
    syn = m.score(["the latest value"], [["the recent value"]])[0]
    other = m.score(["the purple value"], [["the recent value"]])[0]
    assert syn > other


def test_multi_reference_max_and_mean():
    refs = [["a b c d", "x y z w"]]
    best = RougeL(multi_ref="max").score(["a b c d"], refs)[0]
    mean = RougeL(multi_ref="mean").score(["a b c d"], refs)[0]
    assert best == pytest.approx(1.0) and mean == pytest.approx(0.5)
    with pytest.raises(ValueError, match="multi_ref"):
        RougeL(multi_ref="median")


def test_bertscore_offline_matches_bert_score_library(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import bert_score

    from medalign_utils.assets import minilm_path

    hyps = [HYP, "Blood pressure was 150/90 mm Hg.", "No information found."]
    refs = [REF, "The last blood pressure was 148/92.", "The patient takes metformin."]
    ours = BertScore(num_layers=6).score_prf(hyps, [[r] for r in refs])
    P, R, F = bert_score.score(hyps, refs, model_type=str(minilm_path()), num_layers=6)
    assert np.allclose(ours, np.column_stack([P, R, F]).astype(float), atol=2e-4)
    assert ours[0, 2] > ours[2, 2]


def test_bertscore_rescale_uses_the_shipped_baseline():
    base = load_baseline()
    assert set(base) == {1, 2, 3, 4, 5, 6} and all(0 < f < 1 for _, _, f in base.values())
    raw = BertScore(num_layers=6).score([HYP], [[REF]])[0]
    resc = BertScore(num_layers=6, rescale=True).score([HYP], [[REF]])[0]
    assert resc == pytest.approx((raw - base[6][2]) / (1 - base[6][2]))


def test_greedy_match_hand_checked():
    h = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = np.array([[1.0, 0.0]])
    p, rc, f = greedy_match(h, r)
    assert (p, rc) == (0.5, 1.0) and f == pytest.approx(2 / 3)


def test_source_embedding_rewards_agreement_with_the_source():
    m = SourceEmbedding()
    hyps = ["Metformin 500 mg twice daily.", "Metformin 500 mg twice daily."]
    refs = [["The patient takes metformin."]] * 2
    with_src = m.score(
        hyps, refs, sources=["metformin hydrochloride 500 MG Oral Tablet", "chest X-ray showed no fracture"]
    )
    assert with_src[0] > with_src[1]


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown metric 'bluert'"):
        make_metric("bluert")


def test_comet_is_an_optional_extra_reported_unavailable():
    m = make_metric("comet")
    assert not m.available and m.reason


def test_tau_per_instruction_equals_scipy_on_tied_data():
    rows_s, rows_l = [], []
    rng = np.random.default_rng(0)
    ref = {}
    for i in range(40):
        s = rng.integers(0, 3, 6).astype(float)  # metric ties
        rk = rng.integers(1, 4, 6)  # clinician ties
        for m in range(6):
            rows_s.append([f"q{i}", f"m{m}", "x", s[m]])
            rows_l.append([f"q{i}", f"m{m}", rk[m]])
        ref[f"q{i}"] = stats.kendalltau(s, -rk).statistic
    scores = pd.DataFrame(rows_s, columns=["instruction_id", "system", "metric", "score"])
    labels = pd.DataFrame(rows_l, columns=["instruction_id", "system", "model_rank"])
    taus = per_instruction_tau(scores, labels).set_index("instruction_id").tau
    want = pd.Series(ref)
    assert np.allclose(taus.loc[want.index], want, equal_nan=True)
    t4 = table4(scores, labels, bootstrap=Bootstrap(n_resamples=200)).iloc[0]
    assert t4.n_excluded == int(want.isna().sum()) and t4.n_instructions == int(want.notna().sum())
    assert t4.mean_tau == pytest.approx(want.mean())


@pytest.fixture(scope="module")
def gold_scores(gold_cohort):
    release = load_release(gold_cohort)
    names = ["rougeL", "bleu", "chrf++", "google_bleu", "meteor", "bertscore"]
    if not wordnet_status()[0]:
        names.remove("meteor")
    scores, sigs = score_responses(release.model_responses, release.references, names, progress=False)
    labels = clinicians.combine_raters(release.model_responses, "primary")
    return release, scores, sigs, labels


@pytest.mark.slow(seconds=20)
def test_every_metric_correlates_positively_and_below_the_human_ceiling(gold_scores, gold_cohort):
    release, scores, sigs, labels = gold_scores
    t4 = table4(scores, labels, bootstrap=Bootstrap(n_resamples=500))
    ceiling = json.loads((gold_cohort / "planted_truth.json").read_text())["expected_inter_rater_tau"]
    print("\n" + t4.round(3).to_string())
    print("paper:\n" + paper.TABLE4.to_string())
    assert (t4.mean_tau > 0).all() and (t4.ci_low > 0).all()
    assert (t4.mean_tau < ceiling).all()
    assert (t4.n_instructions + t4.n_excluded == 303).all()


def test_system_level_and_metric_induced_battles(gold_scores):
    release, scores, sigs, labels = gold_scores
    sys_level = system_level(scores, labels)
    assert (sys_level.system_tau > 0.5).all()  # metrics order the six systems roughly as clinicians do
    induced = metric_induced_labels(scores, "chrf++")
    share = clinicians.win_matrix(induced, systems=paper.MODELS)
    assert share.loc["gpt4_32k_mr", "mpt7b_instruct_2k"] > 0.5
    ranked = rank_systems(scores[scores.metric == "rougeL"], bootstrap=Bootstrap(n_resamples=100))
    assert set(ranked.place) == set(range(1, 7)) and (ranked.ci_low <= ranked["mean"]).all()


def test_table4_cli(gold_cohort, capsys):
    assert (
        cli.main(["table4", str(gold_cohort), "--metrics", "rougeL,chrf++,bleu", "--resamples", "100", "--quiet"]) == 0
    )
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert {"metric", "mean_tau", "ci_low", "ci_high", "n_instructions", "n_excluded"} <= set(df.columns)
    assert set(df.metric) == {"rougeL", "chrf++", "bleu"} and (df.n_instructions > 250).all()
    assert df.signature.str.contains("sacrebleu").any()


def test_paper_preset_equals_the_authors_library_calls_to_1e9():
    """TIMER's lineage: ROUGE-L on white-space tokens, case kept, no stemmer; METEOR on nltk's word
    tokens; GoogleBLEU on sacrebleu's 13a tokens, case kept."""
    from nltk.tokenize import word_tokenize
    from nltk.translate.gleu_score import sentence_gleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    from medalign_utils.evaluation.metrics import make_metric

    class Whitespace:
        tokenize = staticmethod(str.split)

    pairs = [
        (HYP, REF),
        ("Metformin 500 mg BID; BP 128/80.", "metformin 500 MG twice daily, blood pressure 128/80"),
        ("No.", "The patient does not smoke."),
    ]
    hyps, refs = [h for h, _ in pairs], [[r] for _, r in pairs]
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=Whitespace())
    want = [rouge.score(r, h)["rougeL"].fmeasure for h, r in pairs]
    assert np.allclose(make_metric("rougeL", "paper").score(hyps, refs), want, atol=1e-9, rtol=0)
    tok = Tokenizer13a()
    want = [sentence_gleu([tok(r).split()], tok(h).split()) for h, r in pairs]
    assert np.allclose(make_metric("google_bleu", "paper").score(hyps, refs), want, atol=1e-9, rtol=0)
    meteor = make_metric("meteor", "paper")
    if meteor.available:
        want = [
            meteor_score([word_tokenize(r, preserve_line=True)], word_tokenize(h, preserve_line=True)) for h, r in pairs
        ]
        assert np.allclose(meteor.score(hyps, refs), want, atol=1e-9, rtol=0)
    # The presets differ, and each signature says which made it.
    suite = make_metric("rougeL", "suite")
    assert suite.score(hyps, refs)[1] != make_metric("rougeL", "paper").score(hyps, refs)[1]
    assert "preset:paper" in make_metric("rougeL").signature_str() and "preset:suite" in suite.signature_str()
    with pytest.raises(ValueError, match="unknown metric preset"):
        make_metric("rougeL", "timer")


def test_table4_counts_each_exclusion_reason_and_restricts_by_systems():
    scores = pd.DataFrame(
        [
            ["q1", "A", "m", 0.9], ["q1", "B", "m", 0.5], ["q1", "C", "m", 0.1],  # tau 1
            ["q2", "A", "m", 0.3], ["q2", "B", "m", 0.3], ["q2", "C", "m", 0.3],  # constant metric
            ["q3", "A", "m", 0.9], ["q3", "B", "m", 0.1], ["q3", "C", "m", 0.5],  # clinicians all tied
            ["q4", "A", "m", 0.9], ["q4", "B", "m", 0.1],  # two systems: tau -1
            ["q5", "A", "m", 0.9],  # one system
        ],
        columns=["instruction_id", "system", "metric", "score"],
    )  # fmt: skip
    ranks = {"q1": [1, 2, 3], "q2": [1, 2, 3], "q3": [2, 2, 2], "q4": [2, 1], "q5": [1]}
    labels = pd.DataFrame(
        [[q, "ABC"[i], r] for q, rs in ranks.items() for i, r in enumerate(rs)],
        columns=["instruction_id", "system", "model_rank"],
    )
    t = table4(scores, labels, bootstrap=Bootstrap(n_resamples=50)).iloc[0]
    assert t.mean_tau == pytest.approx((1 + -1) / 2) and t.n_instructions == 2
    assert (t.n_too_few_systems, t.n_constant_metric, t.n_tied_clinicians, t.n_excluded) == (1, 1, 1, 3)
    t3 = table4(scores, labels, min_systems=3, bootstrap=Bootstrap(n_resamples=50)).iloc[0]
    assert t3.mean_tau == pytest.approx(1.0) and t3.n_instructions == 1 and t3.n_too_few_systems == 2


def test_a_metric_registered_once_carries_its_metadata_to_table4_and_the_cli(gold_cohort, capsys):
    """A metric is one registration: its name, whether it is a default, whether it needs the source,
    and its direction; score_responses and `medalign table4` read those, never the name."""
    from medalign_utils import cli
    from medalign_utils.data import load_release
    from medalign_utils.evaluation import metrics as M
    from medalign_utils.evaluation.correlation import score_responses

    class LengthGap(M.Metric):
        """|len(response) - len(reference)| in words: lower is better."""

        name = "length_gap_test"

        def _pair(self, hyp, ref):
            return abs(len(hyp.split()) - len(ref.split()))

    M.register_metric("length_gap_test", LengthGap, default=False, higher_is_better=False)
    try:
        assert "length_gap_test" in M.metric_names() and "length_gap_test" not in M.metric_names(default=True)
        assert M.metric_names(needs_source=True) == ["src_embed", "comet"]
        release = load_release(gold_cohort)
        scores, signatures = score_responses(
            release.model_responses, release.references, ["length_gap_test"], progress=False
        )
        raw = make_metric("length_gap_test")
        first = scores.iloc[0]
        response = release.model_responses.set_index(["instruction_id", "system"]).model_response[
            (first.instruction_id, first.system)
        ]
        refs = release.references.set_index("instruction_id").clinician_response
        reference = (
            refs[first.instruction_id]
            if isinstance(refs[first.instruction_id], str)
            else refs[first.instruction_id].iloc[0]
        )
        assert first.score == -raw.score([response], [[reference]])[0]  # turned: Table 4 reads higher as better
        assert signatures["length_gap_test"].startswith("metric:length_gap_test|preset:paper")
        assert (
            cli.main(["table4", str(gold_cohort), "--metrics", "length_gap_test", "--resamples", "50", "--quiet"]) == 0
        )
        assert "length_gap_test" in capsys.readouterr().out
    finally:
        M._REGISTRY.pop("length_gap_test", None)


def test_a_signature_is_a_value_object():
    a, b = make_metric("chrf++").signature(), make_metric("chrf++").signature()
    assert hash(a) == hash(b)
    assert a == b and a != make_metric("chrf").signature()
    assert a.to_dict()["nw"] == 2 and str(a) == make_metric("chrf++").signature_str()
    assert a.metric == "chrf++" and a.preset == "paper" and a.version.startswith("sacrebleu ")


def test_each_setting_default_is_a_class_attribute_its_constructor_and_signature_follow():
    import inspect

    from medalign_utils.evaluation import metrics as M

    classes = [M.RougeL, M.Bleu, M.Chrf, M.GoogleBleu, M.Meteor, M.BertScore, M.SourceEmbedding, M.Comet]
    for cls in classes:
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if param.default is inspect.Parameter.empty or name in ("model_path", "checkpoint"):
                continue
            assert hasattr(cls, name.upper()), (cls.__name__, name)  # every setting's default is declared
            assert param.default == getattr(cls, name.upper()), (cls.__name__, name)

    assert M.RougeL().settings()["stemmer"] is M.RougeL.USE_STEMMER is True
    assert M.Chrf().signature().to_dict()["nw"] == M.Chrf.WORD_ORDER == 2
