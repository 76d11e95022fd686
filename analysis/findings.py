"""The README's findings table, generated from the committed mini-studies' ``claims.csv``.

The README must not say anything about a verdict that ``claims.csv`` does not: its table is written by
this module between two markers (:data:`START`, :data:`END`), and ``tests/test_findings.py`` fails
when the README's table differs from what :func:`findings_table` makes of ``results/<study>/claims.csv``.

Per claim: the study (linked to its report), the claim's id and statement, the verdict, the learning
gate (:func:`analysis.claims.gate_summary`, shortened to its first failure) and the seeds
(:func:`analysis.claims.stability_summary`).

Usage::

    python -m analysis.findings            # rewrite README.md's table from results/*/claims.csv
    python -m analysis.findings --check    # exit 1 if the README's table is out of date
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.claims import GATE_FAILED, GATE_PASSED, gate_summary, stability_summary
from benchmark.layout import CLAIMS_CSV

START = "<!-- findings table: written by `python -m analysis.findings` from results/*/claims.csv; do not edit -->"
END = "<!-- end of findings table -->"


@dataclass(frozen=True)
class Study:
    folder: str  # results/<folder>
    title: str
    number: int  # the study's number in the README's list of four


STUDIES = (
    Study("redcnn_wgan", "RED-CNN: MSE vs WGAN-GP", 3),
    Study("mstlf", "MSTLF in GAN frameworks", 1),
    Study("upl", "untrained perceptual loss (2-D)", 4),
    Study("loss_vs_iqa", "loss vs IQA", 2),
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def short_gate(g: pd.DataFrame) -> str:
    """The gate in a table cell: ``passed``, or ``failed:`` with the first failure and how many more."""
    text = gate_summary(g, max_conditions=1000)
    if text.startswith(GATE_FAILED):
        items = text.removeprefix(f"{GATE_FAILED}: ").split("; ")
        more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
        return f"failed: {items[0]}{more}"
    return GATE_PASSED if text.startswith(GATE_PASSED) else text


def findings_table(results: Path) -> str:
    """The Markdown table of every claim of every study in ``results`` (a study without claims.csv is
    listed as not run)."""
    lines = ["| study | claim | statement | verdict | learning gate | seeds |", "|---|---|---|---|---|---|"]
    for study in STUDIES:
        link = f"[{study.title}](results/{study.folder}/report.md) (study {study.number})"
        path = results / study.folder / CLAIMS_CSV
        if not path.is_file():
            lines.append(f"| {link} | – | no claims.csv | – | – | – |")
            continue
        claims = pd.read_csv(path, dtype={"id": str, "condition": str}, keep_default_na=False)
        for i, (cid, g) in enumerate(claims.groupby("id", sort=False)):
            first = g.iloc[0]
            lines.append(f"| {link if i == 0 else ''} | `{cid}` | {_cell(first['statement'])} | **{first['verdict']}** | "
                         f"{_cell(short_gate(g))} | {_cell(stability_summary(first))} |")  # fmt: skip
    return "\n".join(lines)


def replace_table(readme: str, table: str) -> str:
    """``readme`` with the text between :data:`START` and :data:`END` replaced by ``table``."""
    if START not in readme or END not in readme:
        raise ValueError(f"README lacks the findings markers {START!r} … {END!r}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's table is out of date")
    args = parser.parse_args(argv)
    readme = args.readme.read_text()
    new = replace_table(readme, findings_table(args.results))
    if args.check:
        if new != readme:
            print(f"{args.readme}: the findings table differs from {args.results}/*/{CLAIMS_CSV}; "
                  "run `python -m analysis.findings`", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
