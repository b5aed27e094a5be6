"""Files for other people and other tools: the marketing table, Excel-safe CSV, Braze's import files.

One import for everything that leaves amptools as a file; each job lives in its own module:

- :func:`marketing_table` (:mod:`amptools.marketing`): one row per user for a campaign;
- :func:`to_csv`, :func:`escape_cell`, :func:`unescape_cell` (:mod:`amptools.spreadsheet`):
  a CSV people open in Excel or Google Sheets without running a formula;
- :func:`to_braze_csv`, :func:`to_braze_json` (:mod:`amptools.braze.files`, beside the
  rest of Braze): files Braze's user import and ``/users/track`` take as they are;
- :func:`write_atomic` (:mod:`amptools.files`): any file, whole or not at all.

The user guide, with the rules each writer follows, is ``docs/export.md``.
"""

from __future__ import annotations

from .braze.files import (
    BRAZE_CSV_ATTRIBUTES,
    BRAZE_DEFAULT_ATTRIBUTES,
    BRAZE_ID_TYPES,
    BRAZE_MAX_BATCH,
    BRAZE_MAX_BYTES,
    BRAZE_RESERVED_NAMES,
    BrazeFormatWarning,
    to_braze_csv,
    to_braze_json,
)
from .errors import BrazeImportError, PersonalDataError
from .files import PERSONAL_DATA_ATTR, PRIVATE_MODE, write_atomic
from .marketing import (
    PROPERTY_PREFIX,
    REC_ITEMS_COLUMN,
    PropertyRenamedWarning,
    is_personal_data_name,
    marketing_table,
)
from .spreadsheet import ExcelReformatWarning, escape_cell, to_csv, unescape_cell

__all__ = [
    "BRAZE_CSV_ATTRIBUTES",
    "BRAZE_DEFAULT_ATTRIBUTES",
    "BRAZE_ID_TYPES",
    "BRAZE_MAX_BATCH",
    "BRAZE_MAX_BYTES",
    "BRAZE_RESERVED_NAMES",
    "BrazeFormatWarning",
    "BrazeImportError",
    "ExcelReformatWarning",
    "PERSONAL_DATA_ATTR",
    "PRIVATE_MODE",
    "PROPERTY_PREFIX",
    "PersonalDataError",
    "PropertyRenamedWarning",
    "REC_ITEMS_COLUMN",
    "escape_cell",
    "is_personal_data_name",
    "marketing_table",
    "to_braze_csv",
    "to_braze_json",
    "to_csv",
    "unescape_cell",
    "write_atomic",
]
