"""`google.api.http` path templates: parsed and compiled once, then matched per request.

Grammar (from `google/api/http.proto`)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

`*` matches one path segment, `**` zero or more (only as the last segment),
`{x}` is short for `{x=*}`. A template is compiled into one anchored regular
expression; `match()` takes the raw (still percent-encoded) path and returns the
bound variables, keyed by their (possibly dotted) field path, percent-decoded.
Single-segment variables decode `%2F` to `/`; multi-segment ones keep it
encoded, as the spec says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["PathTemplate", "TemplateError", "parse"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Characters a literal may hold: RFC 3986 pchar minus what the grammar reserves.
_LITERAL = re.compile(r"[A-Za-z0-9\-._~%!$&'()+,;=@]+\Z")
_ENCODED_SLASH = re.compile("%2F", re.IGNORECASE)
_ONE_SEGMENT = "[^/]+"
_MANY_SEGMENTS = ".*"


class TemplateError(ValueError):
    """A path template that does not follow the `google.api.http` grammar."""


@dataclass(frozen=True, slots=True)
class _Var:
    """One variable of a compiled template."""

    field_path: str
    group: str
    multi_segment: bool


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled path template.

    Attributes:
        template: The template text as written in the proto.
        verb: The custom verb (`""` when the template has none).
        literal_path: The full path when the template has no wildcard or
            variable (routes can then be found by a dict lookup), else None.
        variables: The field paths of the variables, in template order.
    """

    template: str
    verb: str
    literal_path: str | None
    variables: tuple[str, ...]
    _regex: re.Pattern[str]
    _vars: tuple[_Var, ...]

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Matches a raw (percent-encoded) URL path.

        Args:
            raw_path: The request path without query string, as sent.

        Returns:
            The bound variables (field path -> decoded value), or None when the
            path does not match.
        """
        if self.literal_path is not None:
            return {} if raw_path == self.literal_path else None
        m = self._regex.fullmatch(raw_path)
        if m is None:
            return None
        bound: dict[str, str] = {}
        for var in self._vars:
            value = m.group(var.group)
            if value is None:  # "**" matched zero segments
                continue
            if var.multi_segment:
                # Keep "%2F" encoded so the segments stay distinguishable.
                bound[var.field_path] = "%2F".join(unquote(s) for s in _ENCODED_SLASH.split(value))
            else:
                bound[var.field_path] = unquote(value)
        return bound


class _Parser:
    """Recursive-descent parser producing regex source and variables."""

    def __init__(self, template: str) -> None:
        self.text = template
        self.pos = 0
        self.vars: list[_Var] = []
        self.has_wildcard = False
        self.deep_seen = False

    def fail(self, why: str) -> TemplateError:
        return TemplateError(f"invalid path template {self.text!r} at {self.pos}: {why}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take_until(self, stops: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        return self.text[start : self.pos]

    def segments(self, stops: str, in_var: bool) -> str:
        parts = [self.segment(stops, in_var)]
        while self.peek() == "/":
            self.pos += 1
            parts.append(self.segment(stops, in_var))
        return "/".join(parts)

    def segment(self, stops: str, in_var: bool) -> str:
        if self.deep_seen:
            raise self.fail("'**' must be the last segment")
        c = self.peek()
        if c == "{":
            if in_var:
                raise self.fail("nested variable")
            return self.variable()
        token = self.take_until("/" + stops)
        if token == "*":
            self.has_wildcard = True
            return _ONE_SEGMENT
        if token == "**":
            self.has_wildcard = True
            self.deep_seen = True
            return _MANY_SEGMENTS
        if not token:
            raise self.fail("empty segment")
        if not _LITERAL.match(token):
            raise self.fail(f"invalid literal {token!r}")
        return re.escape(token)

    def variable(self) -> str:
        self.pos += 1  # "{"
        field_path = self.take_until("=}")
        if not all(_IDENT.match(part) for part in field_path.split(".")):
            raise self.fail(f"invalid field path {field_path!r}")
        if any(v.field_path == field_path for v in self.vars):
            raise self.fail(f"variable {field_path!r} bound twice")
        deep_before = self.deep_seen
        if self.peek() == "=":
            self.pos += 1
            inner = self.segments("}", in_var=True)
        else:
            inner = _ONE_SEGMENT
        if self.peek() != "}":
            raise self.fail("expected '}'")
        self.pos += 1
        group = f"v{len(self.vars)}"
        multi = inner != _ONE_SEGMENT and (self.deep_seen != deep_before or "/" in inner)
        self.vars.append(_Var(field_path, group, multi))
        self.has_wildcard = True
        return f"(?P<{group}>{inner})"


def parse(template: str) -> PathTemplate:
    """Parses and compiles a path template.

    Args:
        template: e.g. `/v1/images/generations`, `/admin/v1/tokens/{token_id}`,
            `/v1/{name=projects/*/files/**}:download`.

    Returns:
        The compiled template.

    Raises:
        TemplateError: The template is not valid.
    """
    if not template.startswith("/"):
        raise TemplateError(f"invalid path template {template!r}: must start with '/'")
    # The verb is the text after the last ':' that is outside any variable.
    body, verb = template, ""
    colon = template.rfind(":")
    if colon > template.rfind("}") and colon > template.rfind("/"):
        body, verb = template[:colon], template[colon + 1 :]
        if not _LITERAL.match(verb):
            raise TemplateError(f"invalid path template {template!r}: bad verb {verb!r}")
    parser = _Parser(body)
    parser.pos = 1
    if body == "/":
        source = ""
    else:
        source = parser.segments("", in_var=False)
        if parser.pos != len(body):
            raise parser.fail("unexpected character")
    suffix = re.escape(":" + verb) if verb else ""
    if parser.deep_seen and source.endswith("/" + _MANY_SEGMENTS):
        # "/a/**" also matches "/a": the slash belongs to the zero-or-more part.
        source = source[: -len("/" + _MANY_SEGMENTS)] + "(?:/.*)?"
    elif parser.deep_seen and source.endswith(f"/(?P<v{len(parser.vars) - 1}>{_MANY_SEGMENTS})"):
        last = f"v{len(parser.vars) - 1}"
        source = source[: -len(f"/(?P<{last}>{_MANY_SEGMENTS})")] + f"(?:/(?P<{last}>.*))?"
    literal = None if parser.has_wildcard else template
    return PathTemplate(
        template=template,
        verb=verb,
        literal_path=literal,
        variables=tuple(v.field_path for v in parser.vars),
        _regex=re.compile("/" + source + suffix),
        _vars=tuple(parser.vars),
    )
