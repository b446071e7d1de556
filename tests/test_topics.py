from __future__ import annotations

import pytest

from edge_agent.topics import TemplateError, TopicTemplate, check_series_template, render


def test_filter_and_match() -> None:
    t = TopicTemplate.parse("plant/{line}/{machine}/{sensor}")
    assert t.mqtt_filter() == "plant/+/+/+"
    assert t.match("plant/l1/press-01/temp") == {"line": "l1", "machine": "press-01", "sensor": "temp"}
    assert t.match("plant/l1/press-01") is None
    assert t.match("plant/l1/press-01/temp/extra") is None
    assert t.match("other/l1/press-01/temp") is None
    assert t.match("plant//press-01/temp") is None  # empty segment names nothing
    assert render("{machine}/{sensor}", t.match("plant/l1/m/s") or {}) == "m/s"


def test_rest_field_matches_the_remainder() -> None:
    t = TopicTemplate.parse("site/{area}/{path*}")
    assert t.mqtt_filter() == "site/+/#"
    assert t.match("site/a/b/c/d") == {"area": "a", "path": "b/c/d"}
    assert t.match("site/a") is None


@pytest.mark.parametrize("bad", ["plant/{a}{b}", "plant/x{a}", "plant/{a}/{a}", "plant/+/x", "plant/#", "{rest*}/x"])
def test_bad_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        TopicTemplate.parse(bad)


def test_series_template_must_use_known_fields() -> None:
    t = TopicTemplate.parse("plant/{line}/{machine}")
    check_series_template("{line}-{machine}", t)
    with pytest.raises(TemplateError):
        check_series_template("{sensor}", t)
