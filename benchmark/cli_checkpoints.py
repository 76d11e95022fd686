"""``ldct-bench checkpoints convert``: the one-time conversion of a run folder's format-1 checkpoints.

Every other command reads checkpoints with ``torch.load(weights_only=True)``, so nothing in a run
folder can run code (:mod:`benchmark.checkpoint`). Checkpoints written before format 2 hold numpy
arrays (the RNG state) and a ``TorchVersion``, which that loader refuses; those commands then stop,
naming the file and this command. Converting loads each such file with ``weights_only=True`` as well,
allowing exactly the numpy array/dtype and ``TorchVersion`` globals a format-1 file holds
(:func:`benchmark.checkpoint.load_legacy_state`), so no code stored in a file runs. It rewrites files in
place, so it asks for ``--trust``: without it, it lists what it would convert and exits 2. Each converted file is rewritten atomically in the current format (numpy RNG state as a
tensor, versions as strings, the cell's identity added), then read back the safe way and checked
against its cell folder.

The command function imports torch lazily (``# lazy: CLI start-up``): ``ldct-bench --help`` must not
load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmark.core.errors import UserError

checkpoints_app = typer.Typer(no_args_is_help=True, add_completion=False)


@checkpoints_app.command("convert")
def convert(
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder whose format-1 checkpoints to convert")],
    trust: Annotated[bool, typer.Option("--trust", help="I trust this folder: load its old checkpoints with full "
                                                        "unpickling (which runs any code stored in them)")] = False,
) -> None:
    """Convert OUT's format-1 checkpoints (ldct-bench before safe loading) to the current format, once.

    Each file is rewritten in place; it is loaded with weights_only=True and only the numpy and
    version globals a format-1 file holds, so nothing stored in it runs. Without --trust, lists the files."""
    from benchmark.checkpoint import (  # lazy: CLI start-up
        CheckpointError,
        load_checkpoint,
        load_legacy_state,
        save_checkpoint,
        upgrade_legacy_state,
    )
    from benchmark.layout import RunLayout, list_checkpoints  # lazy: CLI start-up

    layout = RunLayout(out)
    legacy: list[Path] = []
    current = 0
    left: list[str] = []
    for cell_dir in sorted(p for p in layout.cells_dir.iterdir() if p.is_dir()):
        for path in list_checkpoints(cell_dir / "checkpoints").values():
            try:
                load_checkpoint(path, mmap=True)
                current += 1
            except CheckpointError as exc:
                if exc.reason == "legacy":
                    legacy.append(path)
                else:
                    left.append(str(exc))
    for line in left:
        typer.echo(f"left as it is: {line}", err=True)
    if not legacy:
        typer.echo(f"nothing to convert: {current} checkpoint(s) already in the current format")
        return
    if not trust:
        shown = "\n  ".join(str(p) for p in legacy[:5]) + ("\n  ..." if len(legacy) > 5 else "")
        raise UserError(
            f"{len(legacy)} format-1 checkpoint(s), e.g.\n  {shown}\nConverting rewrites each in place (loaded "
            f"with weights_only=True: only numpy arrays and version strings besides tensors). To do so, run: "
            f"ldct-bench checkpoints convert --out {out} --trust",
            field=str(out),
        )
    failed: list[str] = []
    for path in legacy:
        try:
            save_checkpoint(path, upgrade_legacy_state(load_legacy_state(path)))
        except Exception as exc:
            failed.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        cell_id = path.parent.parent.name
        config = layout.cell_config(cell_id)
        try:
            load_checkpoint(path, mmap=True, cell_id=cell_id, config=config) if config else load_checkpoint(path, mmap=True)
        except CheckpointError as exc:  # converted, but run and analyze will not use it
            typer.echo(f"warning: converted, but {exc}", err=True)
    typer.echo(f"converted {len(legacy) - len(failed)} checkpoint(s); {current} already current")
    if failed:
        raise UserError("could not convert:\n  " + "\n  ".join(failed), field=str(out))
