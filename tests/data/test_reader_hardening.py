"""A reader that loses nothing and says what it skipped, tried with adversarial releases."""

from __future__ import annotations

import io
import os
import re
import shutil

import pandas as pd
import pytest
from helpers import responses_path

from medalign_utils import cli
from medalign_utils.data import SYNTHETIC_MARKER, load_release
from medalign_utils.generation import DataGuard, DataGuardError


@pytest.mark.parametrize("kind", ["directory", "foreign text", "stale fingerprint", "link"])
def test_only_the_generators_own_marker_makes_a_release_synthetic(tiny_cohort, tmp_path, kind):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    marker = root / SYNTHETIC_MARKER
    assert load_release(root).is_synthetic
    if kind == "directory":
        marker.unlink()
        marker.mkdir()
    elif kind == "foreign text":
        marker.write_text("synthetic, trust me\n")
    elif kind == "stale fingerprint":
        tsv = root / "clinician-reviewed-model-responses.tsv"
        tsv.write_text(tsv.read_text() + "\n")  # the files changed since the marker was written
    else:
        real = tmp_path / "marker-elsewhere"
        shutil.move(marker, real)
        marker.symlink_to(real)
    release = load_release(root)
    assert not release.is_synthetic and release.planted_truth is None
    assert any(p.file == SYNTHETIC_MARKER for p in release.problems)
    with pytest.raises(DataGuardError):
        DataGuard.for_release(release).check("https://api.example.com/v1")


# ------------------------------------------------------------------ reader and labels


def test_out_of_range_labels_are_reported_per_row_and_left_out(tiny_cohort, tmp_path, capsys):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    df = pd.read_csv(responses_path(root), sep="\t", dtype=str, keep_default_na=False)
    bad = {0: ("binary_correct", "2"), 1: ("model_rank", "7"), 2: ("model_rank", "0"), 3: ("model_rank", "-1")}
    bad.update({4: ("model_rank", "1e9"), 5: ("model_rank", "inf")})
    for i, (col, v) in bad.items():
        df.loc[i, col] = v
    df.to_csv(responses_path(root), sep="\t", index=False)
    assert cli.main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    for i, (col, _v) in bad.items():
        assert re.search(rf"clinician-reviewed-model-responses.tsv:row {i + 1}: {col} .* left out", out), (i, col)
    assert cli.main(["table3", str(root), "--resamples", "20"]) == 0
    captured = capsys.readouterr()
    t3 = pd.read_csv(io.StringIO(captured.out))
    assert t3.correct_pct.between(0, 100).all() and t3.mean_rank.between(1, 6).all()
    assert "no usable model_rank" in captured.err and "no usable binary_correct" in captured.err


def test_parse_cache_is_keyed_by_content_and_person(tiny_cohort, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    files = sorted((root / "ehrs").glob("*.xml"))
    shutil.copyfile(files[0], files[1])  # two patients, byte-identical files
    events = load_release(root).events(progress=False)
    counts = events.groupby("person_id", observed=True).size()
    assert counts[files[0].stem] == counts[files[1].stem] > 0


def test_large_fields_are_read_and_swallowed_csv_rows_reported(tiny_cohort, tmp_path):
    from medalign_utils.data import read_table

    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    df = pd.read_csv(responses_path(root), sep="\t", dtype=str, keep_default_na=False)
    df.loc[0, "model_response"] = "x" * 200_000  # over csv's 128 KB default
    df.to_csv(responses_path(root), sep="\t", index=False)
    release = load_release(root)
    assert release.model_responses.model_response.str.len().max() == 200_000
    csv_path = tmp_path / "t.csv"
    lines = ["instruction_id,question,model_name"] + [f"{i},q{i},m" for i in range(10)]
    lines[3] = '2,"an unbalanced quote,m'
    csv_path.write_text("\n".join(lines) + "\n")
    problems = []
    table = read_table(csv_path, problems)
    lost = [p for p in problems if "row lost" in p.message]
    assert len(table) + len(lost) >= 10 - 1 and len(lost) >= 4
    assert all(p.where.startswith("line ") for p in lost)


def test_header_only_responses_give_a_clear_error(tiny_cohort, tmp_path, capsys):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    path = responses_path(root)
    path.write_text(path.read_text().splitlines()[0] + "\n")
    for args in (["table3", str(root)], ["table4", str(root), "--metrics", "rougeL", "--quiet"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no reviewed responses" in err[0] and "Traceback" not in err[0]


def test_utf16_records_are_decoded_and_reported(tiny_cohort, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    path = sorted((root / "ehrs").glob("*.xml"))[0]
    text = path.read_text()
    path.write_bytes(text.encode("utf-16"))
    release = load_release(root)
    assert release.ehr_text(path.stem) == text  # no NUL-interleaved text reaches a prompt
    events = release.events(progress=False)
    assert (events.person_id == path.stem).sum() > 0
    assert any("utf-16" in p.message for p in release.problems)


def test_a_bad_byte_costs_one_line_not_the_patient(tiny_cohort, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    path = sorted((root / "ehrs").glob("*.xml"))[0]
    before = load_release(tiny_cohort).events(progress=False)
    lines = path.read_bytes().split(b"\n")
    lines[7] += b"\xff\xfe"  # line 8: bytes that are no UTF-8
    lines[20] += b"\xc3"
    path.write_bytes(b"\n".join(lines))
    release = load_release(root)
    events = release.events(progress=False)
    kept, expected = (events.person_id == path.stem).sum(), (before.person_id == path.stem).sum()
    assert kept == expected > 0  # every event stays
    (problem,) = [p for p in release.problems if "not text" in p.message]
    assert problem.file == f"ehrs/{path.name}" and problem.where == "line 8 and 1 more"
    assert problem.message == "2 lines hold bytes that are not text; each read with U+FFFD"
    assert "\ufffd" in release.ehr_text(path.stem)


def test_links_outside_the_release_are_reported_and_followed_only_when_allowed(tiny_cohort, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    outside = tmp_path / "elsewhere.xml"
    first = sorted((root / "ehrs").glob("*.xml"))[0]
    shutil.move(first, outside)
    first.symlink_to(outside)
    release = load_release(root)
    assert first.stem not in release.ehr_files
    assert any("outside the release folder; skipped" in p.message for p in release.problems)
    allowed = load_release(root, follow_external_links=True)
    assert first.stem in allowed.ehr_files


def test_read_only_cache_falls_back_with_a_warning(tiny_cohort, tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        # root ignores directory permissions: make the cache path a file, which no one can write into.
        blocked = tmp_path / "cache"
        blocked.write_text("not a folder")
    else:
        blocked = tmp_path / "cache"
        blocked.mkdir()
        blocked.chmod(0o500)
    monkeypatch.setenv("MEDALIGN_CACHE_DIR", str(blocked / "inner"))
    with pytest.warns(UserWarning, match="cannot be written"):
        code = cli.main(["validate", str(tiny_cohort)])
    assert code == 0, capsys.readouterr()
