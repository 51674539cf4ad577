"""The look both HTML reports share (cohorts and experiments): presentation only, no math.

Modules: :mod:`~cohortlens.reports.page` (CSS for screen and print, the header with the data's
date range and the command, sections, tooltips), :mod:`~cohortlens.reports.svg` (the inline-SVG
builder, measured text and wrapping, the colour-blind-safe palettes), :mod:`~cohortlens.reports.fmt`
(numbers, percentages, intervals, p-values) and :mod:`~cohortlens.reports.table` (the sortable,
filterable table with a CSV download). Conventions: docs/REPORTS.md.
"""

from cohortlens.reports.page import ReportMeta
from cohortlens.reports.table import Column

__all__ = ["Column", "ReportMeta"]
