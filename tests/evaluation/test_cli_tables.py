"""The CLI's tables are safe to open in a spreadsheet."""

from __future__ import annotations

import re
import shutil

from helpers import responses_path

from medalign_utils import cli


def test_table3_csv_cells_cannot_become_formulas(tiny_cohort, tmp_path, capsys):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    path = responses_path(root)
    path.write_text(path.read_text().replace("gpt4_2k", '=HYPERLINK("http://x")').replace("mpt7b_instruct_2k", "@mpt"))
    assert cli.main(["table3", str(root), "--resamples", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "\"'=HYPERLINK(" in out and '"\'@mpt"' in out
    assert not re.search(r"(^|,)[=@+]", out, re.M)
