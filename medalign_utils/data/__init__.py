"""Reading a release: the tables, both EHR XML schemas, and the cohort's description.

`open_release(path)` finds the layout (TSV or CSV, every EHR folder and file naming seen), reads
the three tables with quoting off, coerces ranks and labels, and returns a `Release` whose EHRs
parse on demand (lxml iterparse, one events table, a parquet cache keyed by the XML file's hash).
Every problem becomes a `Problem` line naming the file and row; an unusable release raises
`UnusableReleaseError`. `describe` summarises a cohort (demographics, events, notes, fit shares,
categories against Table 2). This stage reads only: making a cohort is `synthetic`'s job.
"""

from .describe import (
    LENGTH_LABELS,
    category_table,
    cohort_summary,
    cohort_table,
    data_line,
    events_per_type,
    fit_shares,
    instruction_demographics,
    instruction_length_bins,
    near_duplicate_instructions,
    notes_per_type,
    release_label,
    share_visible,
    specialty_table,
    subcategory_table,
    to_paper_category,
)
from .ehr import (
    file_digest,
    parse_ehr,
    parse_timestamp,
    read_ehr_text,
    split_paper_code,
)
from .problems import Problem, UnusableReleaseError
from .release import (
    SYNTHETIC_MARKER,
    Release,
    find_layout,
    load_release,
    open_release,
    primary_reviewer_rows,
    rater_column,
    read_table,
    synthetic_marker,
    validate_release,
)

__all__ = [
    "LENGTH_LABELS",
    "SYNTHETIC_MARKER",
    "Problem",
    "Release",
    "UnusableReleaseError",
    "category_table",
    "cohort_summary",
    "cohort_table",
    "data_line",
    "events_per_type",
    "file_digest",
    "find_layout",
    "fit_shares",
    "instruction_demographics",
    "instruction_length_bins",
    "load_release",
    "near_duplicate_instructions",
    "notes_per_type",
    "open_release",
    "parse_ehr",
    "parse_timestamp",
    "primary_reviewer_rows",
    "rater_column",
    "read_ehr_text",
    "read_table",
    "release_label",
    "share_visible",
    "specialty_table",
    "split_paper_code",
    "subcategory_table",
    "synthetic_marker",
    "to_paper_category",
    "validate_release",
]
