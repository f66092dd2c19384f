from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.exceptions import TopicError
from ingest.topics import KitTopic, TopicKind, TopicLayout


@given(st.integers(0, 2**32 - 1), st.sampled_from(TopicKind))
def test_topics_round_trip(kit_id: int, kind: TopicKind) -> None:
    layout = TopicLayout("x/bikesense/v1")
    topic = layout.up(kit_id) if kind is TopicKind.UP else layout.status(kit_id)
    assert layout.parse(topic) == KitTopic(kit_id, kind)


@pytest.mark.parametrize(
    ("topic", "complaint"),
    [
        ("other/kits/1/up", "not under"),
        ("bikesense/v1/kits/1/up/extra", "should be"),
        ("bikesense/v1/kits/abc/up", "not a 32-bit"),
        ("bikesense/v1/kits/4294967296/up", "not a 32-bit"),
        ("bikesense/v1/kits/-1/up", "not a 32-bit"),
        ("bikesense/v1/kits/7/down", "unknown message kind"),
    ],
)
def test_bad_topics_say_why(topic: str, complaint: str) -> None:
    with pytest.raises(TopicError, match=complaint):
        TopicLayout().parse(topic)


def test_shared_subscription() -> None:
    layout = TopicLayout()
    assert layout.shared(layout.up_filter(), "g") == "$share/g/bikesense/v1/kits/+/up"
    assert layout.subscriptions("g") == [
        "$share/g/bikesense/v1/kits/+/up",
        "$share/g/bikesense/v1/kits/+/status",
    ]
    assert layout.subscriptions("") == ["bikesense/v1/kits/+/up", "bikesense/v1/kits/+/status"]


def test_a_topic_parses_only_under_its_own_root_and_a_refusal_repeats() -> None:
    # Parses are remembered per (root, topic); refusals are not, so each one raises.
    topic = TopicLayout("a/v1").up(7)
    assert TopicLayout("a/v1").parse(topic) == KitTopic(7, TopicKind.UP)
    for _ in range(2):
        with pytest.raises(TopicError, match="not under"):
            TopicLayout("b/v1").parse(topic)
    assert TopicLayout("a/v1").parse(topic) == KitTopic(7, TopicKind.UP)
