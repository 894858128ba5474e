"""The command line's shared plumbing: the `coldchain` group, the logging flags, the checkout, the
engine, output as JSON or text, and the only place where errors become messages and exit codes (the
table is contract.Exit, shared with the containers)."""

from __future__ import annotations

import errno
import functools
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import __version__, options
from ..config import Project
from ..contract import EXIT_MEANINGS, Exit, error_line
from ..errors import ColdchainError, OutputError
from ..signals import Terminated, terminating_raises

if TYPE_CHECKING:
    from ..steps.pipeline import StepSettings

log = logging.getLogger("coldchain")


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr, format="coldchain: %(message)s")


def _report(error: ColdchainError) -> None:
    click.echo(error_line(error.message), err=True)
    if error.log_tail:
        click.echo("  --- log tail ---", err=True)
        click.echo("\n".join(f"  | {line}" for line in error.log_tail.splitlines()), err=True)
    if error.fix:
        click.echo(f"  fix: {error.fix}", err=True)


def command(function):
    """Shared plumbing: logging flags, project discovery, and every failure as one message and its code."""

    @options.verbose
    @options.quiet
    @options.project
    @options.docker_timeout
    @functools.wraps(function)
    def wrapper(verbose: int, quiet: int, project: Path | None, docker_timeout_s: float, **kwargs):
        _setup_logging(verbose, quiet)
        click.get_current_context().meta[CALL_TIMEOUT_KEY] = docker_timeout_s  # connect()'s, when a step asks
        try:
            with terminating_raises():
                found = Project.find(project)
                _sweep(found)
                return function(found, **kwargs)
        except ColdchainError as error:
            _report(error)
            sys.exit(error.exit_code)
        except Terminated as signalled:
            click.echo(f"coldchain: terminated by {signalled.name}; the running container and staged outputs "
                       "were removed", err=True)
            sys.exit(signalled.exit_code)
        except KeyboardInterrupt:
            click.echo("coldchain: interrupted", err=True)
            sys.exit(Exit.INTERRUPTED)
        except OSError as error:
            if error.errno not in WRITE_ERRNOS:
                _internal(error, verbose)
            # A write no step wrapped: still the user's disk, not a coldchain bug.
            failed = OutputError.of(Path(error.filename or Path.cwd()), error)
            _report(failed)
            sys.exit(failed.exit_code)
        except Exception as error:  # noqa: BLE001 - a bug must still end in one line, not a traceback
            _internal(error, verbose)

    return wrapper


def _sweep(project: Project) -> None:
    """What dead runs left in this checkout (staging and scratch directories) goes first."""
    from ..steps.sweep import sweep_directories

    sweep_directories(project.root / "out", project.build_dir)


# Errors only a write gives (a full disk, a quota, a read-only file system).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _internal(error: Exception, verbose: int) -> None:
    if verbose:
        traceback.print_exc()
    click.echo(error_line(f"internal error: {type(error).__name__}: {error}"), err=True)
    click.echo("  fix: this is a coldchain bug; rerun with -v for the traceback and report it", err=True)
    sys.exit(Exit.INTERNAL)


CALL_TIMEOUT_KEY = "coldchain.docker_timeout_s"  # in click's context meta: --docker-timeout, for connect()


def connect():
    """The Docker engine, once it answers, with the containers of dead runs removed. Commands pass this
    function on (not an engine), so a request is checked before the daemon is asked; tests replace it
    with a fake engine."""
    from ..engine.docker import DockerEngine
    from ..steps.sweep import sweep_containers

    context = click.get_current_context(silent=True)
    engine = DockerEngine(**({"timeout": context.meta[CALL_TIMEOUT_KEY]}
                             if context is not None and CALL_TIMEOUT_KEY in context.meta else {}))
    engine.ping()
    sweep_containers(engine)
    return engine


def emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


EPILOG = "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_MEANINGS.items()))


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name=None, version=__version__)
def main():
    """coldchain: a frozen ResNet v1 50 from the training container to the inference container,
    environment captured to the byte."""


def step_command(name: str, passthrough=options.passthrough):
    """The options every containerised step shares; arguments the host does not know go to the container."""
    def decorate(function):
        for option in (command, passthrough, options.timeout, options.prefix, options.memory, options.device):
            function = option(function)
        return main.command(name, context_settings={"ignore_unknown_options": True})(function)
    return decorate


def step_settings(device: str, memory: str, prefix: str, timeout_s: float | None, extra) -> StepSettings:
    """What every step command's shared options say, for its request."""
    from ..steps.pipeline import StepSettings

    return StepSettings(device=device, memory=memory, prefix=prefix, timeout_s=timeout_s, arguments=tuple(extra))
