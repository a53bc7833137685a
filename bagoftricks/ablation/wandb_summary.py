"""With ``--wandb``: one summary run in the ablation's W&B group, so the dashboard compares the tricks as it opens.

It holds the per-step table as a ``wandb.Table`` (paired deltas with their intervals, as in results.md), the
figures, and the spec itself; its config is the spec, its job type ``ablation-summary``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bagoftricks.ablation.report import FOOTER, StepSummary, table_rows
from bagoftricks.ablation.spec import Spec


def log_summary(spec: Spec, out_dir: Path, summaries: list[StepSummary], wandb_args: dict[str, Any]) -> None:
    """One W&B run named ``<spec> summary`` in the group ``<spec>``, in ``out_dir`` (offline works as for the runs)."""
    import wandb

    header, rows = table_rows(summaries)
    settings = {key: wandb_args[key] for key in ("project", "entity") if wandb_args.get(key)}
    run = wandb.init(**settings, group=spec.name, name=f"{spec.name} summary", job_type="ablation-summary",
                     dir=str(out_dir), config={"spec": yaml.safe_load(spec.path.read_text()), "spec_path": str(spec.path)})  # fmt: skip
    try:
        images = {name.removesuffix(".png"): wandb.Image(str(out_dir / name)) for name in ("top1.png", "val_curves.png", "lr.png", "budget.png") if (out_dir / name).is_file()}
        run.log({"results": wandb.Table(columns=header, data=rows), **images})
        run.summary["footer"] = FOOTER
        run.save(str(spec.path), base_path=str(spec.path.parent), policy="now")
    finally:
        run.finish()
