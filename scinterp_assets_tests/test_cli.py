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
