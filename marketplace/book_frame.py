"""The order book page's frame from the cache (issue 17).

Everything around the book's rows (base.html's header, menu and footer, the page's title, filter
and quick-trade forms, price chart and pagination) is the same for every viewer of a page, but
Django's template engine costs more to render it than everything else on the request. So the
page is rendered once per book version, language, time zone, query string, signed in or not and
the viewer's country (the payment-method filter's grouping), with a slot where each part that
depends on the viewer goes; a request fills the slots:

- `csrf`: the CSRF token (`get_token`, which also sets the cookie, as `{% csrf_token %}` does);
- the blocks named `viewer_*` in base.html and marketplace/order_book.html: the viewer's rows
  (the rows cache's splice), the messages, the buying-paused banner, and, signed in, the head's
  time zone and live socket, the nav's notifications and admin links and the user menu (for a
  visitor these are the same for everyone: rendered into the frame).

A slot is `\\x00slot:NAME\\x00`: NUL never comes out of a rendered template otherwise. The page is
the same, byte for byte, as one rendered without the frame (marketplace/tests/
test_book_frame_cache.py). A `viewer_*` block is rendered on its own with the request's context
(render_blocks), from the template that defines it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.template import RequestContext
from django.template.base import Template
from django.template.loader import get_template
from django.template.loader_tags import BlockNode
from django.utils.safestring import SafeString, mark_safe

_SLOT = re.compile("\x00slot:(\\w+)\x00")


def slot(name: str) -> SafeString:
    """Where the request's `name` goes in a frame."""
    return mark_safe(f"\x00slot:{name}\x00")  # noqa: S308 (a fixed marker)


@dataclass(frozen=True)
class Frame:
    """A rendered page cut at its slots: text, slot name, text, slot name, ..., text."""

    parts: tuple[str, ...]

    @classmethod
    def cut(cls, html: str) -> Frame:
        return cls(tuple(_SLOT.split(html)))

    @property
    def slots(self) -> set[str]:
        return set(self.parts[1::2])

    def fill(self, values: Mapping[str, str]) -> str:
        out = list(self.parts)
        out[1::2] = [values[name] for name in self.parts[1::2]]
        return "".join(out)


_blocks: dict[int, tuple[Template, dict[str, BlockNode]]] = {}


def _blocks_of(template: Template) -> dict[str, BlockNode]:
    """A template's own blocks by name (nested ones too), found once per compiled template."""
    known = _blocks.get(id(template))
    if known is None or known[0] is not template:
        nodes = template.nodelist.get_nodes_by_type(BlockNode)
        known = (template, {n.name: n for n in nodes if isinstance(n, BlockNode)})
        _blocks[id(template)] = known
    return known[1]


def render_blocks(
    request: HttpRequest, template_name: str, names: Iterable[str], context: dict[str, Any]
) -> dict[str, str]:
    """These blocks of `template_name` as they are defined there, each rendered on its own with
    the request's context (the context processors) and `context`."""
    template: Template = get_template(template_name).template  # type: ignore[attr-defined]
    blocks = _blocks_of(template)
    ctx = RequestContext(request, context)
    with ctx.render_context.push_state(template), ctx.bind_template(template):
        return {name: str(blocks[name].render(ctx)) for name in names}
