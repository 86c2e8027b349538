"""What both command-line interfaces share: one-line errors (exit code 2), the data-fraction option check, the
``--data-root`` rule (:func:`checked_data_root`) and the check of every output (:func:`checked_output`).

``gan-kd`` and ``classifier-kd`` are click groups of class :class:`OneLineErrorGroup`: every usage error, their
own or a command's, prints as ``Error: <message>`` on one line, without click's usage block, and exits with 2.
Library errors (``ValueError`` and friends) become such errors through :func:`usage_error`.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from kd_core.runtime.seed import check_fraction


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` with its whitespace (newlines included) collapsed: what a user sees."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def usage_error(error: BaseException | str) -> click.UsageError:
    """``raise usage_error(err) from None``: a library error as a one-line usage error (exit code 2)."""
    return click.UsageError(one_line(error))


class OneLineError(click.UsageError):
    """Shows only ``Error: <message>`` (no usage block): bad input is reported in one line."""

    def __init__(self, original: click.ClickException) -> None:
        super().__init__(one_line(original.format_message()), ctx=getattr(original, "ctx", None))
        self.exit_code = original.exit_code

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class OneLineErrorGroup(click.Group):
    """A click group whose usage errors (its own and its commands') print as one line, exit code 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as err:
            raise OneLineError(err) from err

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OneLineError:
            raise
        except click.ClickException as err:
            raise OneLineError(err) from err


def fraction_option(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Click callback of ``--data-fraction``: :func:`kd_core.runtime.seed.check_fraction` as a BadParameter."""
    if value is None:
        return value
    try:
        return check_fraction(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None


def checked_data_root(root: str | os.PathLike, download: bool = False) -> Path:
    """:func:`kd_core.runtime.datasets.check_data_root` as a one-line ``BadParameter`` on ``--data-root`` (exit 2).

    Every command with a ``--data-root`` calls it, whether the root was typed or defaulted: only the documented
    default (``data``) may be missing, any other missing root is refused (unless ``download``).
    """
    from kd_core.runtime.datasets import DatasetNotFound, check_data_root

    try:
        return check_data_root(root, download)
    except DatasetNotFound as error:
        raise click.BadParameter(one_line(error), param_hint="'--data-root'") from None


def data_root_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback of a ``--data-root`` that has no ``--download`` beside it: :func:`checked_data_root`."""
    if value is not None:
        checked_data_root(value)
    return value


def checked_output(path: str | os.PathLike, what: str, *, directory: bool = False, option: str = "--out") -> Path:
    """An output ``path`` a command will write, checked before any work: ``BadParameter`` on ``option`` (one line,
    exit 2, naming ``what`` the file is and why it cannot be written) when it is unusable; nothing is created.

    ``directory``: ``path`` is a directory (a run directory) rather than a file.
    """
    from kd_core.runtime.io import OutputNotWritable, check_writable_dir, check_writable_file

    try:
        return (check_writable_dir if directory else check_writable_file)(path, what)
    except OutputNotWritable as error:
        raise click.BadParameter(one_line(error), param_hint=f"'{option}'") from None


def divergence_option(command):
    """The ``--divergence-threshold`` option of both trainers (see :mod:`kd_core.runtime.finite`)."""
    from kd_core.runtime.finite import DIVERGED_EXIT_CODE, DIVERGENCE_THRESHOLD

    return click.option(
        "--divergence-threshold", type=click.FloatRange(min=0), default=DIVERGENCE_THRESHOLD, show_default=True,
        help=f"Flag the run as diverged when a logged loss term's absolute value exceeds this (finite values; NaN/Inf "
             f"stop the run anyway): a warning in the log, 'diverged' in result.json and exit code "
             f"{DIVERGED_EXIT_CODE} at the end. 0 = off.")(command)


class RunDiverged(click.ClickException):
    """A finished run whose losses passed ``--divergence-threshold``: ``Error: <message>``, exit code 3."""

    def __init__(self, message: str) -> None:
        from kd_core.runtime.finite import DIVERGED_EXIT_CODE

        super().__init__(one_line(message))
        self.exit_code = DIVERGED_EXIT_CODE
