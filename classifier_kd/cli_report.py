"""The commands that report rather than train: ``models`` (the names the training commands accept) and ``table``
(finished runs as a Markdown table, and the claims they test)."""
from __future__ import annotations

from pathlib import Path

import click

from classifier_kd.models import available
from kd_core.runtime.cli import checked_output, one_line
from kd_core.runtime.io import replace_block, write_text


@click.command("models")
def models_command():
    """List the model names --model / --student / --teacher accept (plus any timm/<name> when timm is installed)."""
    for name in available():
        click.echo(name)


@click.command("table")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Markdown file to write [default: print to stdout].")
@click.option("--readme", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Also rewrite, in this file, the block between <!-- classifier-claims: OUT --> and "
                   "<!-- /classifier-claims: OUT --> with one line per claim the table tests (needs --out).")
def table_command(run_dirs, out, readme):
    """Markdown table of finished runs: best top-1 (mean ± std over seeds) per teacher-student pair and method,
    the papers' claims it can test (bootstrap verdicts), and each run's command, seed, hardware and wall time."""
    from classifier_kd.report import CLAIMS_BEGIN, CLAIMS_END, build_table, claims_block

    if readme is not None:
        if out is None:
            raise click.UsageError("--readme names its block after the table file: pass --out too")
        text = Path(readme).read_text(encoding="utf-8")
        begin, end = CLAIMS_BEGIN.format(table=out), CLAIMS_END.format(table=out)
        if begin not in text or end not in text:
            raise click.BadParameter(f"{readme} has no {begin} ... {end} block; add the two lines where the "
                                     "claims should go", param_hint="'--readme'")
    if out is not None:
        checked_output(out, "table file")
    if readme is not None:
        checked_output(readme, "README to update", option="--readme")
    try:
        text = build_table([Path(d) for d in run_dirs])
        block = claims_block([Path(d) for d in run_dirs], out) if readme is not None else None
    except (OSError, ValueError, KeyError) as err:
        raise click.UsageError(one_line(err)) from err
    if out is None:
        click.echo(text, nl=False)
        return
    write_text(out, text)
    click.echo(f"wrote {out} ({len(run_dirs)} runs)")
    if block is not None:
        replace_block(readme, begin, end, block)
        click.echo(f"updated the claims of {out} in {readme}")
