import pytest

from sensorlake.config import load_config
from sensorlake.errors import ConfigError
from sensorlake.stream.server import device_subjects
from sensorlake.topics import check_topic_filter, topic_matches


@pytest.mark.parametrize(
    ("filters", "topic", "expected"),
    [
        (["#"], "anything/at/all", True),
        (["farm/#"], "farm/gh-01/telemetry", True),
        (["farm/#"], "farm", True),  # MQTT: "a/#" matches "a" too
        (["farm/#"], "weather/x", False),
        (["+/gh-01/#"], "farm/gh-01/t", True),
        (["+/gh-01/#"], "farm/gh-02/t", False),
        (["a/+"], "a/b", True),
        (["a/+"], "a/b/c", False),
        (["a/b", "c/#"], "c/d", True),
    ],
)
def test_topic_filters_match_like_mqtt(filters: list[str], topic: str, expected: bool) -> None:
    assert topic_matches(filters, topic) is expected


@pytest.mark.parametrize("bad", ["a/#/b", "a/b+", "", "a//b", "$SYS/#", "a/ b"])
def test_invalid_filters_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="'"):
        check_topic_filter(bad)


def test_topics_setting_from_file_env_and_its_errors() -> None:
    cfg = load_config(None, environ={"SENSORLAKE_STREAM__TOPICS": "farm/#, weather/+/obs"})
    assert cfg.stream.topics == ["farm/#", "weather/+/obs"]
    assert device_subjects(cfg.stream.topics) == ["farm.>", "farm", "weather.*.obs"]
    assert device_subjects(["#"]) == [">"]
    with pytest.raises(ConfigError, match=r"stream\.topics.*'#' must be the last level"):
        load_config(None, {"stream": {"topics": ["farm/#/x"]}}, environ={})
