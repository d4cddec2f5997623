"""The ``rarecvr`` command: every subcommand explains itself."""

from click.testing import CliRunner

from rarecvr.cli import STAGE_COMMANDS, main


def test_every_command_answers_help_with_what_it_does():
    runner = CliRunner()
    listing = runner.invoke(main, ["--help"])
    assert listing.exit_code == 0
    for name in STAGE_COMMANDS:
        assert name in listing.output
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert f"Usage: main {name}" in result.output or f"Usage: rarecvr {name}" in result.output
        assert len(result.output.splitlines()) > 4, name


def test_abtest_help_names_its_kpis_and_options():
    result = CliRunner().invoke(main, ["abtest", "--help"])
    for words in ("--quick", "--days", "--seeds", "--json", "CPA", "A/A", "--variant-version"):
        assert words in result.output


def test_research_esmm_runs_the_entire_space_study_instead_of_the_tables(monkeypatch):
    from research import commands

    called = {}
    monkeypatch.setattr(
        commands, "_esmm", lambda quick, out, as_json: called.update(quick=quick, json=as_json)
    )
    result = CliRunner().invoke(main, ["research", "--esmm", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    assert called == {"quick": True, "json": True}
