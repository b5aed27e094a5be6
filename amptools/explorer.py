"""Renamed: the explorer's controller is :mod:`amptools.controller` (the explorer itself,
the widgets, is :mod:`amptools.widgets`). This module keeps old imports working."""

from __future__ import annotations

import warnings

from .controller import *  # noqa: F403
from .controller import __all__ as __all__

warnings.warn("amptools.explorer is deprecated: the explorer's controller is amptools.controller "
              "(same names)", DeprecationWarning, stacklevel=2)
