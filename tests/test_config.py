from pathlib import Path

import pytest

from sensorlake.config import documented_keys, load_config, render_example
from sensorlake.errors import ConfigError


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(environ={})
    assert (cfg.server.host, cfg.server.mqtt_port, cfg.server.http_port) == (
        "127.0.0.1", 1883, 8080)
    assert cfg.data_dir == tmp_path / "sensorlake-data"
    assert cfg.lake.flush_interval == 10.0
    assert cfg.ingest.max_body_bytes == 16 * 1024 * 1024


def test_precedence_file_then_env_then_options(tmp_path: Path) -> None:
    path = tmp_path / "sensorlake.toml"
    path.write_text('data_dir = "here"\n[server]\nhttp_port = 9000\nmqtt_port = 1884\n')
    cfg = load_config(path, {"server": {"mqtt_port": 1999}},
                      environ={"SENSORLAKE_SERVER__HTTP_PORT": "9100"})
    assert cfg.server.http_port == 9100
    assert cfg.server.mqtt_port == 1999
    assert cfg.data_dir == tmp_path / "here"  # relative to the file, not the cwd


def test_unknown_key_names_the_key_and_suggests_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "sensorlake.toml"
    path.write_text("[server]\nhtp_port = 9000\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == "server.htp_port"
    assert "did you mean 'http_port'" in str(caught.value)


def test_invalid_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.http_port.*99999"):
        load_config(None, environ={"SENSORLAKE_SERVER__HTTP_PORT": "99999"})
    with pytest.raises(ConfigError, match=r"ingest\.device_id_from"):
        load_config(None, {"ingest": {"device_id_from": "payload"}}, environ={})


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sensorlake.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="sensorlake init"):
        load_config(tmp_path / "missing.toml", environ={})


def test_example_config_lists_every_key_and_loads(tmp_path: Path) -> None:
    text = render_example()
    for key in documented_keys():
        assert f"{key.split('.')[-1]} = " in text
    path = tmp_path / "sensorlake.toml"
    path.write_text(text)
    load_config(path, environ={})


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    missing = [key for key in documented_keys() if f"`{key}`" not in doc]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_the_example_rule_and_view_load_once_uncommented(tmp_path: Path) -> None:
    text = render_example()
    start = text.index("# [[rules]]")
    entries = "\n".join(line.removeprefix("# ") for line in text[start:].splitlines()
                        if line.startswith("# ") and (" = " in line or line.startswith("# [[")))
    path = tmp_path / "sensorlake.toml"
    path.write_text(entries)
    config = load_config(path, environ={})
    assert [r.name for r in config.rules] == ["too_warm"]
    assert [v.name for v in config.views] == ["latest"]
    assert [c.name for c in config.alerts.channels] == ["farm-discord"]
    assert [d.name for d in config.detectors] == ["greenhouse-silent"]


def test_init_ships_the_smart_farm_detectors_and_up_demo_runs_them_without_a_file(
        tmp_path: Path) -> None:
    from sensorlake.config import with_smart_farm_detectors

    path = tmp_path / "sensorlake.toml"
    path.write_text(render_example())
    written = load_config(path, environ={})
    assert [(d.name, d.kind, d.field) for d in written.detectors] == [
        ("sensor-error", "flag", "error_code"), ("temperature-range", "range", "temperature")]
    assert with_smart_farm_detectors(load_config(None, environ={})).detectors == (
        written.detectors)


@pytest.mark.parametrize(("toml", "key", "words"), [
    ('[[detectors]]\nname = "d"\nfield = "t"\nkind = "range"\nmax = 1\nchannel = "nope"\n',
     "detectors.d.channel", "no alert channel is named 'nope'"),
    ('[[rules]]\nname = "r"\nsql = "SELECT * FROM \'a/#\'"\nalert = "nope"\n',
     "rules.r.alert", "no alert channel is named 'nope'"),
    ('[[alerts.channels]]\nname = "c"\ntype = "teams"\nurl = "https://x"\n',
     "alerts.channels[0].type", "discord"),
    ('[[alerts.channels]]\nname = "c"\ntype = "slack"\nurl = "ftp://x"\n',
     "alerts.channels[0].url", "https?"),
    ('[alerts]\ngroup_by = ["room"]\n', "alerts.group_by", "'room' is not a label"),
    ('[[alerts.channels]]\nname = "c"\ntype = "slack"\nurl = "https://x"\n'
     '[[detectors]]\nname = "hot"\nfield = "t"\nkind = "range"\nmax = 1\n'
     '[[rules]]\nname = "hot"\nsql = "SELECT * FROM \'a/#\'"\nalert = "c"\n',
     "rules.hot.alert", "a detector has this name too"),
    ('[[detectors]]\nname = "d"\nfield = "t"\nkind = "wobble"\n', "detectors[0].kind",
     "range"),
])
def test_alert_settings_are_checked_with_the_key_and_the_fix(
        tmp_path: Path, toml: str, key: str, words: str) -> None:
    path = tmp_path / "sensorlake.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.key == key
    assert words in str(caught.value)
