"""Topic templates: ``plant/{line}/{machine}/{sensor}`` -> MQTT filter ``plant/+/+/+`` and named fields.

A template segment is either a literal or a whole ``{name}``; a trailing ``{name*}`` matches the
rest of the topic (MQTT ``#``). The series id is rendered from a second template over the same
names, e.g. ``{machine}/{sensor}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FIELD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}$")
_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    template: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, None) or ("", field name)
    rest_field: str | None

    @classmethod
    def parse(cls, template: str) -> TopicTemplate:
        if not template or template.startswith("/") and template == "/":
            raise TemplateError(f"empty topic template {template!r}")
        segments = template.split("/")
        parts: list[tuple[str, str | None]] = []
        rest: str | None = None
        seen: set[str] = set()
        for i, seg in enumerate(segments):
            m = _FIELD.match(seg)
            if m:
                name, star = m.group(1), m.group(2)
                if name in seen:
                    raise TemplateError(f"{template!r}: field {{{name}}} appears twice")
                seen.add(name)
                if star:
                    if i != len(segments) - 1:
                        raise TemplateError(f"{template!r}: {{{name}*}} must be the last segment")
                    rest = name
                else:
                    parts.append(("", name))
            elif "{" in seg or "}" in seg or "+" in seg or "#" in seg:
                raise TemplateError(f"{template!r}: segment {seg!r} must be a literal or a whole {{field}}")
            else:
                parts.append((seg, None))
        return cls(template, tuple(parts), rest)

    @property
    def fields(self) -> tuple[str, ...]:
        names = tuple(f for _, f in self.parts if f)
        return names + ((self.rest_field,) if self.rest_field else ())

    def mqtt_filter(self) -> str:
        segs = ["+" if f else lit for lit, f in self.parts]
        if self.rest_field:
            segs.append("#")
        return "/".join(segs)

    def match(self, topic: str) -> dict[str, str] | None:
        segs = topic.split("/")
        n = len(self.parts)
        if self.rest_field:
            if len(segs) <= n:
                return None
        elif len(segs) != n:
            return None
        out: dict[str, str] = {}
        for (lit, field), seg in zip(self.parts, segs, strict=False):
            if field is None:
                if seg != lit:
                    return None
            else:
                if not seg:
                    return None
                out[field] = seg
        if self.rest_field:
            out[self.rest_field] = "/".join(segs[n:])
        return out


def render(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` references; a missing name is a TemplateError naming it."""

    def sub(m: re.Match[str]) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise TemplateError(f"template {template!r} refers to unknown field {{{m.group(1)}}}") from None

    return _REF.sub(sub, template)


def check_series_template(series_template: str, topic: TopicTemplate, extra: tuple[str, ...] = (), what: str = "series") -> None:
    """Every ``{name}`` in the template is a field of the topic (or one of ``extra``)."""
    for name in _REF.findall(series_template):
        if name not in topic.fields and name not in extra:
            raise TemplateError(
                f"{what} template {series_template!r} uses {{{name}}}, which topic {topic.template!r} does not define"
            )


def template_fields(template: str) -> list[str]:
    """The ``{name}`` references of a rendering template, in order."""
    return _REF.findall(template)
