"""Braze's Liquid, on python-liquid: its syntax, its tags and filters, and bounds on every render.

Braze runs Shopify's Liquid with pieces of its own. This module makes python-liquid (a
faithful Liquid engine) speak that dialect, for :func:`amptools.braze.preview`:

- **Syntax** (:func:`translate`): Braze's ``${first_name}`` and
  ``custom_attribute.${tier}`` become reads of the attributes table, and an output
  ``{{ }}`` written inside a tag or as a filter argument stands for its value, as
  Braze documents (``{% if {{custom_attribute.${plan}}} == 'free' %}``,
  ``{{ x | plus: {{balance}} }}``). Markup that never closes is an error with its line.
  One pass, linear in the template's length, whatever it holds.
- **Tags and filters**: :data:`FILTERS` and :data:`TAGS` say, for each name, whether
  Braze supports it and on which page of Braze's documentation; that table is the one
  place the preview's choices come from. Braze's own filters (``money``, ``sha2``,
  ``json_parse``, ``time_zone`` ...) are implemented; one Braze marks unsupported, or
  does not list, is an error naming it, never a rendered message Braze would not send.
- **Bounds** (:data:`LIMITS`): a template's size, loop iterations, the size of any
  value, of the variables and of the message, and the time one message may take. A
  hostile template ends in an error within about a second, never a hang or all memory.

Package-internal: the public surface is :mod:`amptools.braze`.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import contextvars
import functools
import hashlib
import hmac
import io
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from liquid import BoundTemplate, Environment, Undefined
from liquid.ast import BlockNode, Node
from liquid.builtin.tags.for_tag import ForNode, ForTag
from liquid.builtin.tags.tablerow_tag import TablerowNode, TablerowTag
from liquid.context import RenderContext
from liquid.exceptions import (
    FilterArgumentError,
    LiquidError,
    LiquidSyntaxError,
    LocalNamespaceLimitError,
    LoopIterationLimitError,
    OutputStreamLimitError,
    ResourceLimitError,
)
from liquid.tag import Tag
from liquid.token import TOKEN_EXPRESSION, TOKEN_TAG, Token

from .tag import DEFAULT_SAVE, URL_END, VARIABLE_NAME, split_tag

__all__ = [
    "ABORT_CALLED",
    "ATTRIBUTES",
    "CUSTOM_ATTRIBUTES",
    "RESPONDER",
    "FILTERS",
    "LIMITS",
    "TAGS",
    "Aborted",
    "ConnectedContentTag",
    "Limits",
    "OutOfTime",
    "RenderState",
    "Support",
    "TemplateError",
    "Translation",
    "braze_name",
    "environment",
    "error_text",
    "render_state",
    "render_state_now",
    "translate",
]


# ---------------------------------------------------------------------------- bounds
@dataclass(frozen=True)
class Limits:
    """What one preview render may use. Braze bounds its own renders too, but does not
    publish how; these are amptools' bounds, far above what a real message needs."""

    #: Characters of a template (an email over 102 KB is already clipped by Gmail; python-liquid
    #: parses 500,000 characters of dense Liquid in about half a second).
    template_chars: int = 500_000
    #: Loop iterations in one message; nested loops multiply (python-liquid's
    #: ``loop_iteration_limit``).
    loop_iterations: int = 10_000
    #: Bytes of the rendered message (python-liquid's ``output_stream_limit``).
    output_bytes: int = 1_000_000
    #: Bytes one value (a filter's result) may hold, counted deeply.
    value_bytes: int = 1_000_000
    #: Bytes all of a message's variables may hold, counted deeply (python-liquid's
    #: ``local_namespace_limit``); an answer Braze uses is at most 1 MB.
    variable_bytes: int = 4_000_000
    #: Seconds one message may take to render.
    seconds: float = 0.5


LIMITS = Limits()


@dataclass
class RenderState:
    """What one render carries besides Liquid's context: its deadline, the variables that
    rendered empty, and the weights of the values it has measured."""

    deadline: float = math.inf
    unresolved: list[str] = field(default_factory=list)
    weights: dict[int, tuple[Any, int]] = field(default_factory=dict)
    #: A Connected Content call with ``:retry`` failed in this render: Braze would retry it.
    retried_call_failed: bool = False

    def check_time(self, token: Token | None = None) -> None:
        if time.monotonic() > self.deadline:
            raise OutOfTime(f"the message took longer than {LIMITS.seconds:g} s to render (a loop "
                              "that runs too long?); the preview stops there", token=token)


_STATE: contextvars.ContextVar[RenderState | None] = contextvars.ContextVar("amptools_braze_render",
                                                                           default=None)



@contextlib.contextmanager
def render_state(state: RenderState) -> Iterator[RenderState]:
    """Make ``state`` the current render's, for the ``with`` block."""
    token = _STATE.set(state)
    try:
        yield state
    finally:
        _STATE.reset(token)


def render_state_now() -> RenderState | None:
    """The current render's state (None outside a preview's render)."""
    return _STATE.get()


class _LimitError(LiquidError):
    """A render went past one of :data:`LIMITS`."""


class OutOfTime(_LimitError):
    """A render took longer than :data:`LIMITS` ``.seconds``."""


_FLAT_WEIGHTS: dict[type, int] = {bool: 8, float: 8, type(None): 8}


def _weight(value: Any, memo: dict[int, tuple[Any, int]] | None = None) -> int:
    """Roughly the bytes ``value`` holds, counted deeply: every reference to a string
    counts its length again (``join`` would copy it again), containers count their items.

    Iterative (values from ``json_parse`` may nest deeply); ``memo`` remembers containers
    already measured, so re-measuring a value built from measured parts costs its own size.
    """
    kind = type(value)
    if kind is str:  # the common case, first: most values are text
        return len(value)
    flat = _FLAT_WEIGHTS.get(kind)
    if flat is not None:
        return flat
    memo = {} if memo is None else memo
    total = 0
    stack: list[tuple[Any, bool]] = [(value, False)]
    # Containers are measured after their items: (container, True) follows its items.
    pending: list[int] = []
    while stack:
        item, done = stack.pop()
        if done:
            size = pending.pop()
            memo[id(item)] = (item, size)
            if pending:
                pending[-1] += size
            else:
                total += size
            continue
        kind = type(item)
        if kind is str or kind is bytes or kind is bytearray:
            size = len(item)
        elif kind in _FLAT_WEIGHTS or isinstance(item, Undefined):
            size = 8
        elif kind is int:
            size = item.bit_length() // 8 + 8
        elif kind is range:
            size = 8 * len(item)
        elif kind in (dict, list, tuple) or isinstance(item, (Mapping, list, tuple, set, frozenset)):
            known = memo.get(id(item))
            if known is not None and known[0] is item:
                size = known[1]
            else:
                stack.append((item, True))
                pending.append(16 * len(item))
                if isinstance(item, Mapping):
                    for key, inner in item.items():
                        stack.append((key, False))
                        stack.append((inner, False))
                else:
                    stack.extend((inner, False) for inner in item)
                continue
        elif isinstance(item, (str, bytes, bytearray)):  # subclasses (Markup)
            size = len(item)
        elif isinstance(item, int):
            size = item.bit_length() // 8 + 8
        else:
            size = sys.getsizeof(item, 64)
        if pending:
            pending[-1] += size
        else:
            total += size
    return total


def _state_weight(value: Any) -> int:
    state = _STATE.get()
    return _weight(value, state.weights if state is not None else None)


# Filters whose result can hold more than their inputs: their containers are measured. The
# others return text or numbers (measured at no cost) or a part of what they were given.
_GROWING = frozenset({"concat", "split", "json_parse"})


def _check_value(name: str, value: Any) -> None:
    if not isinstance(value, (str, int)) and name not in _GROWING:
        return
    if _state_weight(value) > LIMITS.value_bytes:
        raise _LimitError(f"{name}: the value grew past {LIMITS.value_bytes:,} bytes (a string doubled "
                          "in a loop?); the preview stops there", token=None)


# ---------------------------------------------------------------------------- Braze's syntax
#: The namespaces ``${name}`` and ``custom_attribute.${name}`` are read from (attributes
#: by user); inside Liquid markup the Braze syntax becomes a subscript of one of them.
ATTRIBUTES = "__braze_attributes__"
CUSTOM_ATTRIBUTES = "__braze_custom_attributes__"
_HOISTED = "__braze_value_"
_CUSTOM_PREFIX = "custom_attribute."
_OPENER = re.compile(r"\{\{|\{%")
_IN_OUTPUT = re.compile(r"\$\{|\{\{|\}\}")
_IN_TAG = re.compile(r"\$\{|\{\{|\}\}|%\}")
_TAG_NAME = re.compile(r"#|\w+")
_END_RAW = re.compile(r"\{%-?\s*endraw\s*-?%\}")
_BACK = re.compile(rf'({ATTRIBUTES}|{CUSTOM_ATTRIBUTES})\["((?:[^"\\]|\\.)*)"\]')
# Tags whose argument is a Liquid expression: an output inside stands for its value.
_EXPRESSION_TAGS = frozenset({"assign", "echo", "if", "elsif", "unless", "case", "when", "for",
                              "tablerow", "cycle"})
# Of those, the tags that continue a block: nothing can be evaluated just before them.
_CONTINUING_TAGS = frozenset({"elsif", "when"})
# Tags whose argument is a template of its own (the connected_content URL and options).
_TEMPLATE_TAGS = frozenset({"connected_content"})


class TemplateError(ValueError):
    """The template cannot be read as Braze reads it; ``line`` is where (1-based)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Translation:
    """A Braze template as python-liquid source, and the way back to the template's lines."""

    source: str
    text: str
    _starts: list[int]  # offsets in ``text`` where a piece starts
    _origins: list[int]  # where each piece came from in ``source``
    _verbatim: list[bool]  # whether the piece is a copy (offsets inside map one to one)
    _newlines: list[int]

    def line(self, index: int) -> int:
        """The template's line (1-based) of offset ``index`` of :attr:`text`."""
        piece = max(bisect.bisect_right(self._starts, index) - 1, 0)
        origin = self._origins[piece] if self._origins else 0
        if self._verbatim and self._verbatim[piece]:
            origin += index - self._starts[piece]
        return bisect.bisect_right(self._newlines, origin - 1) + 1

    @property
    def last_line(self) -> int:
        return len(self._newlines) + 1


class _Writer:
    """Builds the translated text, remembering where each piece came from."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.size = 0
        self.starts: list[int] = []
        self.origins: list[int] = []
        self.verbatim: list[bool] = []
        self.hoisted = 0

    def copy(self, start: int, end: int) -> None:
        if end > start:
            self._add(self.source[start:end], start, True)

    def put(self, text: str, origin: int) -> None:
        if text:
            self._add(text, origin, False)

    def _add(self, text: str, origin: int, verbatim: bool) -> None:
        self.starts.append(self.size)
        self.origins.append(origin)
        self.verbatim.append(verbatim)
        self.parts.append(text)
        self.size += len(text)

    def line(self, index: int) -> int:
        return self.source.count("\n", 0, index) + 1

    def result(self) -> Translation:
        newlines = [m.start() for m in re.finditer("\n", self.source)]
        return Translation(self.source, "".join(self.parts), self.starts, self.origins, self.verbatim, newlines)


def translate(template: str) -> Translation:
    """Braze's Liquid as python-liquid source (see the module docstring).

    Raises
    ------
    TemplateError
        For markup that never closes, a ``raw`` without ``endraw``, a template over
        :data:`LIMITS` ``.template_chars``, or an output with filters inside a tag that
        continues a block (``elsif``, ``when``), which Liquid cannot evaluate there.
    """
    if len(template) > LIMITS.template_chars:
        raise TemplateError(f"the template has {len(template):,} characters; the preview takes at most "
                            f"{LIMITS.template_chars:,}", 1)
    out = _Writer(template)
    pos = 0
    while True:
        opener = _OPENER.search(template, pos)
        if opener is None:
            out.copy(pos, len(template))
            break
        out.copy(pos, opener.start())
        if opener.group() == "{{":
            pos = _output(out, opener.start())
        else:
            pos = _tag(out, opener.start())
    return out.result()


def _close(source: str, pos: int, in_tag: bool) -> int:
    """Where the markup opened before ``pos`` closes (the index of ``}}`` or ``%}``), or -1.

    ``${...}`` is skipped whole; an output ``{{ }}`` inside opens a level of its own. A tag
    ends at its first ``%}`` (as Liquid's lexer reads it); a ``}}`` at the tag's own level
    is text (JSON in ``:headers``).
    """
    pattern = _IN_TAG if in_tag else _IN_OUTPUT
    depth = 0
    while True:
        match = pattern.search(source, pos)
        if match is None:
            return -1
        token = match.group()
        pos = match.end()
        if token == "${":
            end = source.find("}", pos)
            if end >= 0:
                pos = end + 1
        elif token == "{{":
            depth += 1
        elif token == "}}":
            if depth:
                depth -= 1
            elif not in_tag:
                return match.start()
        else:  # %}
            return match.start()


def _trim_flags(inner: str) -> tuple[str, str, str]:
    """``(left, body, right)``: the whitespace-control dashes and what is between them."""
    left = "-" if inner.startswith("-") else ""
    body = inner[1:] if left else inner
    right = "-" if body.endswith("-") else ""
    return left, body[:-1] if right else body, right


def _output(out: _Writer, start: int) -> int:
    source = out.source
    end = _close(source, start + 2, in_tag=False)
    if end < 0:
        raise TemplateError("'{{' is never closed with '}}' (Braze: brackets come in pairs)", out.line(start))
    left, body, right = _trim_flags(source[start + 2:end])
    hoisted, expression = _expression(out, body, start + 2 + len(left), whole=True, continuing=False)
    for assignment in hoisted:
        out.put(f"{{%{left} {assignment} %}}", start)
    out.put(f"{{{{{left} {expression.strip() or repr('')} {right}}}}}", start)
    return end + 2


def _tag(out: _Writer, start: int) -> int:
    source = out.source
    end = _close(source, start + 2, in_tag=True)
    if end < 0:
        raise TemplateError("'{%' is never closed with '%}' (Braze: brackets come in pairs)", out.line(start))
    left, body, right = _trim_flags(source[start + 2:end])
    stripped = body.lstrip()
    name_match = _TAG_NAME.match(stripped)
    name = name_match.group() if name_match else ""
    rest = stripped[len(name):]
    rest_at = end - len(right) - len(rest)
    if name == "raw":
        closing = _END_RAW.search(source, end + 2)
        if closing is None:
            raise TemplateError("'{% raw %}' is never closed with '{% endraw %}'", out.line(start))
        out.copy(start, closing.end())
        return closing.end()
    if name == "doc":
        # Not Braze's; and python-liquid's lexer reads ahead to its end tag, for each one.
        raise TemplateError(f"Braze does not list the tag 'doc' ({_TAGS_PAGE})", out.line(start))
    hoisted: list[str] = []
    if name in _EXPRESSION_TAGS:
        if name == "assign" and "=" in rest:
            target, _, value = rest.partition("=")
            hoisted, value = _expression(out, value, rest_at + len(target) + 1, whole=True, continuing=False)
            rest = f"{target.strip()} = {value.strip()}"
        else:
            hoisted, rest = _expression(out, rest, rest_at, whole=name == "echo",
                                        continuing=name in _CONTINUING_TAGS)
    elif name in _TEMPLATE_TAGS:
        # The URL is a template rendered for each user; the options are Braze's to read.
        url_end = URL_END.search(rest.strip())
        url = rest.strip()[:url_end.start()] if url_end else rest.strip()
        rest = _attributes_and_outputs(out, url, rest_at) + rest.strip()[len(url):]
    elif name != "#":
        rest = _attributes(rest)
    for assignment in hoisted:
        out.put(f"{{%{left} {assignment} %}}", start)
    out.put(f"{{%{left} {name} {rest.strip()} {right}%}}", start)
    return end + 2


def _attributes(text: str) -> str:
    """``${name}`` and ``custom_attribute.${name}`` as subscripts of the attribute namespaces."""
    if "${" not in text:
        return text
    pieces: list[str] = []
    pos = 0
    while True:
        found = text.find("${", pos)
        close = text.find("}", found + 2) if found >= 0 else -1
        if found < 0 or close < 0:
            pieces.append(text[pos:])
            return "".join(pieces)
        before = text[pos:found]
        namespace = ATTRIBUTES
        if before.endswith(_CUSTOM_PREFIX):
            before, namespace = before[:-len(_CUSTOM_PREFIX)], CUSTOM_ATTRIBUTES
        name = text[found + 2:close].strip()
        pieces += [before, f"{namespace}[{json.dumps(name, ensure_ascii=False)}]"]
        pos = close + 1


def _inner_outputs(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each top-level ``{{ ... }}`` in an expression (end after ``}}``)."""
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            return
        end = _close(text, start + 2, in_tag=False)
        if end < 0:
            raise ValueError("'{{' is never closed with '}}' inside this tag")
        yield start, end + 2
        pos = end + 2


def _has_filter(expression: str) -> bool:
    """Whether a Liquid expression applies a filter: a ``|`` outside quotes."""
    quote_char = ""
    for char in expression:
        if quote_char:
            if char == quote_char:
                quote_char = ""
        elif char in "'\"":
            quote_char = char
        elif char == "|":
            return True
    return False


def _expression(out: _Writer, text: str, origin: int, *, whole: bool,
                continuing: bool) -> tuple[list[str], str]:
    """An expression with Braze's ``{{ }}`` inside made Liquid: ``(assignments to run
    before it, the expression)``.

    An inner output that is the whole expression (``whole``) or applies no filter is
    replaced by what it holds; one with filters is evaluated just before, into a variable
    of its own, which stands in its place.
    """
    try:
        spans = list(_inner_outputs(text))
    except ValueError as error:
        raise TemplateError(str(error), out.line(origin)) from None
    if not spans:
        return [], _attributes(text)
    hoisted: list[str] = []
    pieces: list[str] = []
    pos = 0
    for start, end in spans:
        pieces.append(_attributes(text[pos:start]))
        inner_hoisted, inner = _expression(out, _trim_flags(text[start + 2:end - 2])[1], origin + start + 2,
                                           whole=True, continuing=continuing)
        hoisted += inner_hoisted
        alone = whole and not text[:start].strip() and not text[end:].strip()
        if alone or not _has_filter(inner):
            pieces.append(f" {inner.strip()} ")
        elif continuing:
            raise TemplateError("an output with filters inside {% elsif %} or {% when %} cannot be "
                                "evaluated there; assign it to a variable before the block",
                                out.line(origin + start))
        else:
            out.hoisted += 1
            variable = f"{_HOISTED}{out.hoisted}"
            hoisted.append(f"assign {variable} = {' '.join(inner.split())}")
            pieces.append(f" {variable} ")
        pos = end
    pieces.append(_attributes(text[pos:]))
    return hoisted, "".join(pieces)


def _attributes_and_outputs(out: _Writer, text: str, origin: int) -> str:
    """A tag argument that is a template (a URL): attributes translated, its outputs kept as outputs."""
    try:
        spans = list(_inner_outputs(text))
    except ValueError as error:
        raise TemplateError(str(error), out.line(origin)) from None
    pieces: list[str] = []
    pos = 0
    for start, end in spans:
        left, body, right = _trim_flags(text[start + 2:end - 2])
        # continuing: nothing can be evaluated before a URL's own outputs, so none is hoisted.
        _, inner = _expression(out, body, origin + start + 2, whole=True, continuing=True)
        pieces += [_attributes(text[pos:start]), f"{{{{{left} {inner.strip() or repr('')} {right}}}}}"]
        pos = end
    pieces.append(_attributes(text[pos:]))
    return "".join(pieces)


def braze_name(path: str) -> str:
    """A translated path as the marketer wrote it: ``${first_name}``, ``custom_attribute.${tier}``."""
    def back(match: re.Match[str]) -> str:
        name = json.loads(f'"{match.group(2)}"')
        return f"${{{name}}}" if match.group(1) == ATTRIBUTES else f"custom_attribute.${{{name}}}"

    return _BACK.sub(back, path)


# ---------------------------------------------------------------------------- what Braze supports
@dataclass(frozen=True)
class Support:
    """Braze's word on one tag or filter: ``supported``, and the page of Braze's
    documentation (``braze-inc/braze-docs``, under
    ``_docs/_user_guide/personalization_and_dynamic_content/``) that says so."""

    supported: bool
    source: str


_FILTERS_PAGE = "liquid/filters.md"
_ADVANCED_PAGE = "liquid/advanced_filters.md"
_TAGS_PAGE = "liquid/supported_personalization_tags.md"


def _table(*groups: tuple[str, bool, str]) -> dict[str, Support]:
    table: dict[str, Support] = {}
    for source, supported, names in groups:
        for name in names.split():
            table.setdefault(name, Support(supported, source))
    return table


#: Every filter Braze's filter reference names, supported or not, with its page. A filter
#: it does not name is not in the table: the preview refuses it too (Braze: "always test
#: your Liquid"; a filter that renders here but fails in the send is the worse outcome).
FILTERS: Mapping[str, Support] = _table(
    (f"{_FILTERS_PAGE}#array-filters", True,
     "join first last compact concat index map reverse size sort sort_natural uniq where"),
    (f"{_FILTERS_PAGE}#math-filters", True,
     "abs at_most at_least ceil divided_by floor minus plus round times modulo"),
    (f"{_FILTERS_PAGE}#money-filters", True, "money"),
    (f"{_FILTERS_PAGE}#money-filters", False, "money_with_currency money_without_currency"),
    (f"{_FILTERS_PAGE}#string-filters", True,
     "append capitalize downcase escape md5 sha1 hmac_sha1_hex hmac_sha256 hmac_sha512 newline_to_br "
     "prepend remove remove_first replace replace_first slice split strip strip_html strip_newlines "
     "truncate truncatewords upcase"),
    (f"{_FILTERS_PAGE}#string-filters", False, "camelcase camelize handle handleize pluralize lstrip rstrip"),
    (f"{_FILTERS_PAGE}#additional-filters", True, "date default time_zone"),
    (f"{_FILTERS_PAGE}#additional-filters", False, "format_address highlight"),
    (f"{_FILTERS_PAGE}#color-filters", False,
     "brightness_difference color_brightness color_contrast color_darken color_desaturate color_difference "
     "color_extract color_lighten color_mix color_modify color_saturate color_to_hex color_to_hsl "
     "color_to_rgb hex_to_rgba"),
    (f"{_FILTERS_PAGE}#font-filters", False, "font_face font_modify font_url"),
    (f"{_ADVANCED_PAGE}#encoding-filters", True,
     "sha2 base64_encode hmac_sha1 hmac_sha1_base64 hmac_sha256_hex hmac_sha256_base64"),
    (f"{_ADVANCED_PAGE}#url-filters", True, "url_escape url_param_escape url_encode"),
    (f"{_ADVANCED_PAGE}#property-accessor-filter", True, "property_accessor"),
    (f"{_ADVANCED_PAGE}#number-formatting-filters", True, "number_with_delimiter"),
    (f"{_ADVANCED_PAGE}#json-escape--string-escape-filter", True, "json_escape"),
    (f"{_ADVANCED_PAGE}#json-formatting-filters", True, "json_parse as_json_string"),
)

#: Every tag the preview knows, with the page that says whether Braze supports it. Braze
#: supports Liquid "up to and including Liquid 5" (liquid/using_liquid.md) and points to
#: Shopify's variable, iteration and syntax tags; ``render`` is supported but renders
#: content stored in Braze, which the preview does not have.
TAGS: Mapping[str, Support] = _table(
    (f"{_TAGS_PAGE}#variable-tags", True, "assign capture increment decrement"),
    (f"{_TAGS_PAGE}#iteration-tags", True, "for break continue cycle tablerow"),
    ("liquid/conditional_logic.md", True, "if unless case"),
    (f"{_TAGS_PAGE}#syntax-tags", True, "echo liquid raw comment #"),
    (f"{_TAGS_PAGE}#theme-tags", True, "render"),
    ("connected_content/making_an_api_call.md", True, "connected_content"),
    ("liquid/aborting_messages.md", True, "abort_message"),
)

#: What Braze logs for ``{% abort_message %}`` without a reason (liquid/aborting_messages.md).
ABORT_CALLED = "{% abort_message %} called"


def _not_supported(name: str) -> str:
    support = FILTERS.get(name)
    if support is not None and not support.supported:
        return f"Braze does not support the filter '{name}' (Braze's {support.source})"
    return (f"Braze's filter reference does not list the filter '{name}' ({_FILTERS_PAGE}, {_ADVANCED_PAGE}); "
            "a send may fail on it, so the preview refuses it")


def _refusing_filter(name: str) -> Callable[..., Any]:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise FilterArgumentError(_not_supported(name), token=None)

    return refuse


# ---------------------------------------------------------------------------- Braze's own filters
def _text(value: Any) -> str:
    if value is None or isinstance(value, Undefined):
        return ""
    return value if isinstance(value, str) else str(value)


def _url_param_escape(value: Any) -> str:
    # The same encoding the client uses for a single id: every reserved character escaped.
    return quote(_text(value), safe="")


def _url_escape(value: Any) -> str:
    # Characters a URL may hold stay; the rest are escaped (Braze: 'hey<>hi' -> hey%3C%3Ehi).
    return quote(_text(value), safe="!#$&'()*+,/:;=?@[]~")


def _json_escape(value: Any) -> str:
    return json.dumps(_text(value), ensure_ascii=False)[1:-1]


def _number(value: Any, name: str) -> Decimal:
    if isinstance(value, bool):
        raise FilterArgumentError(f"{name} expects a number, got {value!r}", token=None)
    try:
        number = Decimal(str(value).strip()) if value is not None else Decimal(0)
    except InvalidOperation:
        raise FilterArgumentError(f"{name} expects a number, got {value!r}", token=None) from None
    if not number.is_finite():
        raise FilterArgumentError(f"{name} expects a finite number, got {value!r}", token=None)
    return number


def _money(value: Any) -> str:
    # Braze's money: two decimals always (17.8 -> 17.80, 145 -> 145.00), no currency symbol.
    return f"{_number(value, 'money').quantize(Decimal('0.01')):,}"


def _number_with_delimiter(value: Any) -> str:
    return f"{_number(value, 'number_with_delimiter'):,}"


def _digest(algorithm: str) -> Callable[[Any], str]:
    def digest(value: Any) -> str:
        return hashlib.new(algorithm, _text(value).encode("utf-8")).hexdigest()

    return digest


def _hmac(algorithm: str, encoding: str) -> Callable[[Any, Any], str]:
    def signature(value: Any, key: Any = None) -> str:
        if key is None or isinstance(key, Undefined):
            raise FilterArgumentError("needs the secret key as its argument, e.g. hmac_sha256_hex: 'key'", token=None)
        mac = hmac.new(_text(key).encode("utf-8"), _text(value).encode("utf-8"), algorithm)
        return mac.hexdigest() if encoding == "hex" else base64.b64encode(mac.digest()).decode("ascii")

    return signature


def _property_accessor(value: Any, key: Any = None) -> Any:
    if not isinstance(value, Mapping):
        raise FilterArgumentError(f"property_accessor expects a hash, got {type(value).__name__}", token=None)
    return value.get(_text(key))


def _json_parse(value: Any) -> Any:
    try:
        return json.loads(_text(value))
    except ValueError as error:
        raise FilterArgumentError(f"json_parse: not JSON ({error})", token=None) from None


def _plain(value: Any) -> Any:
    if isinstance(value, Undefined):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, range)):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _as_json_string(value: Any) -> str:
    # Escaping can at most multiply the text by 6 ("\u0000"): refuse before building it.
    if 6 * _state_weight(value) > LIMITS.value_bytes:
        raise _LimitError(f"as_json_string: the value grew past {LIMITS.value_bytes:,} bytes", token=None)
    return json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), default=str)


def _time_zone(value: Any, zone: Any = None) -> Any:
    try:
        tz = ZoneInfo(_text(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise FilterArgumentError(f"time_zone: unknown time zone {zone!r}; use an IANA name such as "
                                  "'America/Los_Angeles'", token=None) from None
    if isinstance(value, str) and value in ("now", "today"):
        moment = datetime.now(timezone.utc)
    elif isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            moment = pd.Timestamp(value).to_pydatetime()
        except (ValueError, OverflowError):
            return value  # as Liquid's date filter does with text it cannot read
    else:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # Braze keeps times in UTC
    return moment.astimezone(tz)


def _index(value: Any, position: Any = 0) -> Any:
    if isinstance(value, (list, tuple, range, str)):
        try:
            return value[int(position)]
        except (IndexError, ValueError, TypeError):
            return None
    return None


_BRAZE_FILTERS: dict[str, Callable[..., Any]] = {
    "url_param_escape": _url_param_escape,
    "url_escape": _url_escape,
    "json_escape": _json_escape,
    "money": _money,
    "number_with_delimiter": _number_with_delimiter,
    "md5": _digest("md5"),
    "sha1": _digest("sha1"),
    "sha2": _digest("sha256"),
    "hmac_sha1": _hmac("sha1", "hex"),
    "hmac_sha1_hex": _hmac("sha1", "hex"),
    "hmac_sha1_base64": _hmac("sha1", "base64"),
    "hmac_sha256": _hmac("sha256", "hex"),
    "hmac_sha256_hex": _hmac("sha256", "hex"),
    "hmac_sha256_base64": _hmac("sha256", "base64"),
    "hmac_sha512": _hmac("sha512", "hex"),
    "property_accessor": _property_accessor,
    "json_parse": _json_parse,
    "as_json_string": _as_json_string,
    "time_zone": _time_zone,
    "index": _index,
}


def _join_estimate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    items = args[0] if args else None
    separator = _text(args[1] if len(args) > 1 else kwargs.get("separator", " "))
    count = len(items) if isinstance(items, (list, tuple, range)) else 1
    return _state_weight(items) + len(separator) * count


def _replace_estimate(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    text = _text(args[0] if args else None)
    old = _text(args[1] if len(args) > 1 else kwargs.get("seq", ""))
    new = _text(args[2] if len(args) > 2 else kwargs.get("sub", ""))
    # Replacing "" inserts the new text between every character.
    return len(text) + (text.count(old) if old else len(text) + 1) * len(new)


# Filters whose result can be far larger than their inputs: measured before they run.
_ESTIMATES: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], int]] = {
    "join": _join_estimate,
    "replace": _replace_estimate,
}


def _bounded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` under :data:`LIMITS`: the render's deadline is checked before it runs, the
    size of what it returns after (and, for filters that multiply text, before)."""
    estimate = _ESTIMATES.get(name)

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        state = _STATE.get()
        if state is not None:
            state.check_time()
        if estimate is not None and estimate(args, kwargs) > LIMITS.value_bytes:
            raise _LimitError(f"{name}: the value would grow past {LIMITS.value_bytes:,} bytes; the preview "
                              "stops there", token=None)
        try:
            result = func(*args, **kwargs)
        except (LiquidError, TypeError):
            raise  # python-liquid puts the filter's line on these
        except (ValueError, ArithmeticError, LookupError) as error:
            raise FilterArgumentError(f"{name}: {error}", token=None) from None
        _check_value(name, result)
        return result

    return bounded


# ---------------------------------------------------------------------------- Braze's tags
class Aborted(Exception):
    """``abort_message`` ran: the message is not sent (not a LiquidError, so it ends the render)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_ABORT_ARGUMENT = re.compile(r"""^\(\s*(?:'([^']*)'|"([^"]*)")?\s*\)$""")


class _AbortNode(Node):
    __slots__ = ("reason",)

    def __init__(self, token: Token, reason: str) -> None:
        super().__init__(token)
        self.reason = reason
        self.blank = True

    def __str__(self) -> str:
        return f"{{% abort_message({self.reason!r}) %}}"

    def render_to_output(self, context: Any, buffer: Any) -> int:
        raise Aborted(self.reason)


class _AbortTag(Tag):
    name = "abort_message"
    block = False

    def parse(self, stream: Any) -> Node:
        token = stream.eat(TOKEN_TAG)
        reason = ""
        if stream.current.kind == TOKEN_EXPRESSION:
            match = _ABORT_ARGUMENT.match(stream.current.value.strip())
            if match is None:
                raise LiquidSyntaxError("abort_message takes one quoted reason without Liquid: "
                                        "abort_message('why') (Braze: the reason cannot contain Liquid)",
                                        token=token)
            reason = match.group(1) if match.group(1) is not None else (match.group(2) or "")
        return _AbortNode(token, reason or ABORT_CALLED)


class _TimedBlock(BlockNode):
    """A loop's body: the render's deadline is checked at every iteration."""

    def render_to_output(self, context: RenderContext, buffer: Any) -> int:
        state = _STATE.get()
        if state is not None:
            state.check_time(self.token)
        return int(super().render_to_output(context, buffer))


class _TimedForNode(ForNode):
    def __init__(self, token: Token, expression: Any, block: BlockNode, default: BlockNode | None = None) -> None:
        super().__init__(token, expression, _TimedBlock(block.token, block.nodes), default)


class _TimedForTag(ForTag):
    node_class = _TimedForNode


class _TimedTablerowNode(TablerowNode):
    def __init__(self, token: Token, expression: Any, block: BlockNode) -> None:
        super().__init__(token, expression, _TimedBlock(block.token, block.nodes))


class _TimedTablerowTag(TablerowTag):
    node_class = _TimedTablerowNode


#: The render global through which :func:`~amptools.braze.preview` answers the calls.
RESPONDER = "__amptools_responder__"


class _ConnectedContentNode(Node):
    __slots__ = ("url", "save", "options")

    def __init__(self, token: Token, url: BoundTemplate, save: str, options: dict[str, Any]) -> None:
        super().__init__(token)
        self.url = url
        self.save = save
        self.options = options
        self.blank = True

    def __str__(self) -> str:
        return "{% connected_content ... %}"

    def render_to_output(self, context: Any, buffer: Any) -> int:
        url = io.StringIO()
        try:
            # The URL's nodes render straight into the message's context: a URL has no
            # tags of its own to scope, and a context of its own per user costs time.
            for node in self.url.nodes:
                node.render(context, url)
        except LiquidError as error:
            raise LiquidSyntaxError(f"in the connected_content URL: {error.message}", token=self.token) from None
        responder = context.globals.get(RESPONDER)
        if responder is None:
            raise LiquidSyntaxError("connected_content is answered only in amptools.braze.preview()",
                                    token=self.token)
        try:
            answer = responder.answer(url.getvalue(), retry=bool(self.options.get("retry")))
        except ValueError as error:  # InvalidQueryError: the call asks for what was not fetched
            raise LiquidSyntaxError(str(error), token=self.token) from None
        if answer is not None:
            state = _STATE.get()
            if state is not None:
                # The answer's size is the Profile API's, bounded where it was fetched; the
                # bounds are for what the template builds from it.
                state.weights[id(answer)] = (answer, 0)
            context.assign(self.save, answer)
        return 0


class ConnectedContentTag(Tag):
    """``{% connected_content URL :option value ... %}``, answered by the preview's responder."""

    name = "connected_content"
    block = False

    def parse(self, stream: Any) -> Node:
        token = stream.eat(TOKEN_TAG)
        if stream.current.kind != TOKEN_EXPRESSION:
            raise LiquidSyntaxError("connected_content needs a URL", token=token)
        try:
            url, options = split_tag(stream.current.value)
        except ValueError as error:
            raise LiquidSyntaxError(f"connected_content: {error}", token=token) from None
        save = str(options.get("save", DEFAULT_SAVE))
        if not VARIABLE_NAME.match(save):
            raise LiquidSyntaxError(f"connected_content: :save {save!r} is not a variable name", token=token)
        try:
            url_template = self.env.from_string(url)
        except LiquidError as error:
            raise LiquidSyntaxError(f"in the connected_content URL: {error.message}", token=token) from None
        return _ConnectedContentNode(token, url_template, save, options)


def _refusing_tag(tag_name: str, why: str) -> type[Tag]:
    def parse(self: Tag, stream: Any) -> Node:
        raise LiquidSyntaxError(why, token=stream.current)

    return type(f"_Refused_{tag_name}", (Tag,), {"name": tag_name, "block": False, "parse": parse})


# ---------------------------------------------------------------------------- the environment
class _BrazeContext(RenderContext):
    """Counts a message's variables deeply (see :func:`_weight`) against the namespace limit."""

    def get_size_of_locals(self) -> int:
        if not self.env.local_namespace_limit:
            return 0
        state = _STATE.get()
        memo = state.weights if state is not None else {}
        return sum(_weight(value, memo) for value in self.locals.values()) + self.local_namespace_size_carry


class _BrazeTemplate(BoundTemplate):
    context_class = _BrazeContext


class _RecordingUndefined(Undefined):
    """Renders empty like Liquid's own, and notes the variable it stood for."""

    __slots__ = ()
    _PATH = re.compile(r"[\w-]+(?:\.[\w-]+|\[[^\]\n]*\])*")

    def __str__(self) -> str:
        state = _STATE.get()
        if state is not None:
            name = self.name
            token = self.token
            if token is not None and token.start_index >= 0:
                # Bounded, so a long line cannot make every undefined variable costly.
                match = self._PATH.match(token.source, token.start_index, token.start_index + 500)
                if match:
                    name = match.group()
            state.unresolved.append(braze_name(name))
        return ""


def _braze_environment_class() -> type[Environment]:
    # Class attributes are how python-liquid takes its resource limits.
    return type("BrazeEnvironment", (Environment,), {
        "loop_iteration_limit": LIMITS.loop_iterations,
        "local_namespace_limit": LIMITS.variable_bytes,
        "output_stream_limit": LIMITS.output_bytes,
        "template_class": _BrazeTemplate,
    })


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    """python-liquid speaking Braze's dialect (module docstring), one per process."""
    env = _braze_environment_class()(undefined=_RecordingUndefined)
    for name, func in list(env.filters.items()):
        support = FILTERS.get(name)
        env.filters[name] = _bounded(name, func) if support and support.supported else _refusing_filter(name)
    for name, support in FILTERS.items():
        if support.supported and name in _BRAZE_FILTERS:
            env.filters[name] = _bounded(name, _BRAZE_FILTERS[name])
        elif not support.supported:
            env.filters[name] = _refusing_filter(name)
    missing = sorted(n for n, s in FILTERS.items() if s.supported and n not in env.filters)
    assert not missing, f"Braze filters without an implementation: {missing}"
    for name in list(env.tags):
        if name not in TAGS and name not in ("output", "content", "illegal"):
            env.add_tag(_refusing_tag(name, f"Braze does not list the tag '{name}' ({_TAGS_PAGE})"))
    env.add_tag(_refusing_tag("render", "{% render %} renders content stored in Braze, which the preview "
                                        f"does not have ({_TAGS_PAGE}#theme-tags)"))
    env.add_tag(_TimedForTag)
    env.add_tag(_TimedTablerowTag)
    env.add_tag(ConnectedContentTag)
    env.add_tag(_AbortTag)
    return env


# ---------------------------------------------------------------------------- errors as text
_LIMIT_TEXTS: dict[type[LiquidError], Callable[[], str]] = {
    LoopIterationLimitError: lambda: (f"the template loops more than {LIMITS.loop_iterations:,} times in one "
                                      "message (nested loops multiply); the preview stops there"),
    OutputStreamLimitError: lambda: f"the message grew past {LIMITS.output_bytes:,} bytes; the preview stops there",
    LocalNamespaceLimitError: lambda: (f"the message's variables grew past {LIMITS.variable_bytes:,} bytes; "
                                       "the preview stops there"),
}


def error_text(error: LiquidError, translation: Translation | None) -> str:
    """A Liquid error as one line for a preview row: ``line 3: what went wrong``."""
    for kind, text in _LIMIT_TEXTS.items():
        if isinstance(error, kind):
            return text()
    message = str(error.message) if error.message is not None else type(error).__name__
    token = error.token
    if isinstance(error, (ResourceLimitError, _LimitError)) and (token is None or token.start_index < 0):
        return message
    if translation is None:
        return message
    if token is None or token.start_index < 0:  # found at the end of the template (an unclosed block)
        return f"line {translation.last_line} (end of the template): {message}"
    if token.source is not translation.text:
        return message  # inside a tag's own template (the connected_content URL): said by the tag
    return f"line {translation.line(token.start_index)}: {message}"
