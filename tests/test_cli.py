from __future__ import annotations

import pytest
from click.testing import CliRunner

from coldchain.cli import main


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_documents_itself(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_outside_a_checkout_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["lock-check"])
    assert result.exit_code == 2
    assert "is not inside a coldchain checkout" in result.output and "--project" in result.output


def test_unknown_option_value_names_the_choices():
    result = CliRunner().invoke(main, ["images", "--image", "infer-cpi"])
    assert result.exit_code == 2 and "infer-cpu" in result.output
