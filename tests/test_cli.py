"""The command line: options defined once with their environment variables shown, the exit-code table
in the help, and failures as one message with the fix."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from coldchain.cli import main
from coldchain.contract import EXIT_MEANINGS, Exit


def test_every_environment_variable_is_shown_where_its_option_is():
    runner = CliRunner()
    for name, command in sorted(main.commands.items()):
        shown = runner.invoke(main, [name, "--help"], terminal_width=200).output
        for parameter in command.params:
            if isinstance(parameter, click.Option) and parameter.envvar:
                assert parameter.show_envvar, f"{name} {parameter.opts[0]}: {parameter.envvar} hidden from --help"
                assert parameter.envvar in shown, f"{name} --help does not show {parameter.envvar}"


# Options a user sets from CI or a shell profile: each must name its variable in its own --help entry.
SHOWN_ENVVARS = {
    "infer": {"--runtime": "COLDCHAIN_RUNTIME", "--precision": "COLDCHAIN_PRECISION",
              "--bf16-tolerance": "COLDCHAIN_BF16_TOLERANCE", "--golden-cache": "COLDCHAIN_GOLDEN_CACHE",
              "--device": "COLDCHAIN_DEVICE", "--memory": "COLDCHAIN_MEMORY", "--prefix": "COLDCHAIN_PREFIX",
              "--timeout": "COLDCHAIN_TIMEOUT", "--project": "COLDCHAIN_PROJECT"},
    "drift-test": {"--matrix": "COLDCHAIN_MATRIX", "--shard": "COLDCHAIN_SHARD", "--costs": "COLDCHAIN_COSTS",
                   "--jobs": "COLDCHAIN_JOBS"},
    "drift-plan": {"--shards": "COLDCHAIN_SHARDS", "--costs": "COLDCHAIN_COSTS"},
    "images": {"--base-image": "COLDCHAIN_BASE_IMAGE", "--no-pull": "COLDCHAIN_NO_PULL",
               "--keep-build-stages": "COLDCHAIN_KEEP_BUILD_STAGES"},
    "images-push": {"--index": "COLDCHAIN_IMAGE_INDEX", "--shard": "COLDCHAIN_SHARD"},
    "adopt": {"--requirements": "COLDCHAIN_REQUIREMENTS", "--matrix": "COLDCHAIN_MATRIX"},
}


def option_entries(help_text: str) -> dict[str, str]:
    """Each option's --help entry (its line and the wrapped lines under it), whitespace joined, by flag."""
    entries: dict[str, str] = {}
    flags: list[str] = []
    for line in help_text.splitlines():
        if line.startswith("  -"):
            head = line.split("  ")[1]  # "-v, --verbose" or "--golden-cache / --no-golden-cache"
            flags = [flag.strip(",") for flag in head.split() if flag.startswith("-")]
            for flag in flags:
                entries[flag] = line
        elif line.startswith("   ") and flags:
            for flag in flags:
                entries[flag] += " " + line
        else:
            flags = []
    return {flag: " ".join(text.split()) for flag, text in entries.items()}


@pytest.mark.parametrize("name", sorted(SHOWN_ENVVARS))
def test_options_show_their_environment_variable_in_their_own_help_entry(name):
    entries = option_entries(CliRunner().invoke(main, [name, "--help"], terminal_width=200).output)
    for flag, envvar in SHOWN_ENVVARS[name].items():
        assert flag in entries, f"{name} --help has no {flag}"
        assert f"[env var: {envvar}" in entries[flag], f"{name} {flag}: {entries[flag]!r}"


def test_the_help_lists_every_exit_code_once():
    text = CliRunner().invoke(main, ["--help"], terminal_width=400).output
    for code, meaning in EXIT_MEANINGS.items():
        assert f"{code} {meaning}" in " ".join(text.split()), code
    assert len(EXIT_MEANINGS) == len([name for name in vars(Exit) if not name.startswith("_")])


def test_outside_a_checkout_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["lock-check"])
    assert result.exit_code == 2
    assert "is not inside a coldchain checkout" in result.output and "--project" in result.output


def test_unknown_option_value_names_the_choices():
    result = CliRunner().invoke(main, ["images", "--image", "infer-cpi"])
    assert result.exit_code == 2 and "infer-cpu" in result.output


def test_a_bug_is_one_line_not_a_traceback(monkeypatch, tmp_path):
    from coldchain import cli

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("coldchain.environments.locks.check_all", broken)
    result = CliRunner().invoke(cli.main, ["lock-check"])
    # Its own code: a CI job must not read a crash of the kit as a drift case's verdict (1).
    assert result.exit_code == Exit.INTERNAL == 70 and Exit.INTERNAL != Exit.UNEXPECTED
    assert "internal error: RuntimeError: boom" in result.output and "Traceback" not in result.output
    assert "coldchain bug" in result.output


def test_the_readme_lists_every_exit_code(project):
    """README's exit-code table is the contract's, row for row."""
    rows = {}
    for line in project.path("README.md").read_text().split("## Exit codes", 1)[1].splitlines():
        cells = line.split("|")
        if len(cells) > 2 and cells[1].strip().isdigit():
            rows[int(cells[1])] = cells[2].strip()
    assert sorted(rows) == sorted(EXIT_MEANINGS)
    assert "internal error" in rows[Exit.INTERNAL] and "internal error" not in rows[Exit.UNEXPECTED]
