"""The API's JSON renderer: DRF's JSONRenderer, with its bytes written by orjson (issue 17).

Profiled (bench/profile_request.py), the standard library's encoder took ~0.37 ms of the order
book's request (50 offers, 22 KB); orjson writes the same bytes in a tenth of that. Same bytes,
by construction:

- what the standard library writes natively and orjson too (str, int, bool, None, list, tuple,
  dict with str keys, UUID): the same text (compact separators, UTF-8 unescaped as DRF's
  UNICODE_JSON, U+2028/U+2029 escaped as DRF escapes them);
- dates, times and dataclasses are passed through to DRF's own encoder (`default`), so a
  datetime still reads `...Z`, milliseconds as DRF cuts them, a Decimal the float DRF makes of it
  (the API's amounts are strings before they get here: COERCE_DECIMAL_TO_STRING);
- anything orjson refuses (an int beyond 64 bits, a key of another type, an object DRF's
  encoder can't turn into JSON either) is rendered by DRF's renderer, which raises as before;
- an indented answer (`Accept: application/json; indent=4`, the browsable API) is DRF's.

Known differences, both about floats, which the API does not send (amounts are strings): a float
is written in its shortest form by both but with another exponent notation (`1e16` for
`1e+16`), and a NaN or an infinity becomes `null` where DRF's strict JSON raised."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils import encoders

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_default = encoders.JSONEncoder().default
_LS, _PS = "\u2028".encode(), "\u2029".encode()


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        plain = self.compact and not self.ensure_ascii and self.strict
        if (
            not plain
            or self.get_indent(accepted_media_type or "", renderer_context or {}) is not None
        ):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=_default, option=_OPTIONS)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
        if _LS in out or _PS in out:  # valid JSON, but not a JavaScript literal: DRF escapes them
            out = out.replace(_LS, b"\\u2028").replace(_PS, b"\\u2029")
        return out
