from scinterp_assets import cli


def test_dagster_home_is_created_under_the_configured_home(small_project, monkeypatch, capsys):
    monkeypatch.setenv("SCINTERP_CONFIG", str(small_project.source))
    assert cli.main(["dagster-home"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(small_project.home / "dagster_home")
    assert "telemetry" in (small_project.home / "dagster_home" / "dagster.yaml").read_text()


def test_broken_configuration_exits_with_the_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCINTERP_CONFIG", str(tmp_path / "missing.yaml"))
    assert cli.main(["dagster-home"]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_instance_settings_are_added_without_touching_what_the_file_says(tmp_path):
    import yaml

    from scinterp_assets.cli import INSTANCE_SETTINGS, ensure_instance_settings

    ensure_instance_settings(tmp_path / "fresh")
    assert yaml.safe_load((tmp_path / "fresh" / "dagster.yaml").read_text()) == INSTANCE_SETTINGS
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "dagster.yaml").write_text("# my storage\ntelemetry:\n  enabled: true\n")
    ensure_instance_settings(mine)
    text = (mine / "dagster.yaml").read_text()
    assert text.startswith("# my storage\ntelemetry:\n  enabled: true\n")  # comment and choice kept
    assert yaml.safe_load(text) == {"telemetry": {"enabled": True}, "nux": {"enabled": False}}
