"""Exporting reviewed answers as a training corpus from the page or the API: one zip file.

The selection is read in one short transaction and the files written after it (as the
`medplib review export-dataset` command does), into a fresh folder under the web scratch
space; the folder is zipped and removed. Refusals leave nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.services.dataset_export import (
    ExportSummary,
    parse_since,
    select_for_export,
    write_export,
)
from webapp import render
from webapp.handlers.common import UserFacingError, Web, to_actor, user_errors
from webapp.state import ActorState


@dataclass(frozen=True)
class DatasetZip:
    path: str  # the zip file to download
    summary: ExportSummary


def _min_rating(value: float | None) -> int | None:
    if value is None or value == 0:
        return None  # 0 / empty: the default acceptance rule (masks all good, text not wrong)
    if value != value or int(value) != value or not 1 <= value <= 5:
        raise UserFacingError("The minimum rating is a whole number from 1 to 5 (or empty).")
    return int(value)


def export_zip(
    web: Web,
    class_link_id: str | None,
    since: str | None,
    min_rating: float | None,
    actor_state: ActorState | None,
) -> DatasetZip:
    """The reviewed answers matching the filters as a zipped MeCoVQA corpus."""
    actor = to_actor(actor_state)
    if actor is None:
        raise UserFacingError("Log in with a reviewer account first.")
    try:
        moment = parse_since(since) if since and since.strip() else None
    except ValueError as exc:
        raise UserFacingError(f"Since: {exc}.") from None
    rating = _min_rating(min_rating)
    selection = web.call(
        select_for_export,
        actor=actor,
        class_link_id=(class_link_id or "").strip() or None,
        since=moment,
        min_rating=rating,
    )
    work = Path(tempfile.mkdtemp(dir=web.scratch))
    try:
        with user_errors():
            summary = write_export(selection, store=web.platform.store, out_dir=work / "corpus")
        archive = shutil.make_archive(str(work / "medplib-reviewed-corpus"), "zip", work / "corpus")
        data = Path(archive).read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DatasetZip(web.download_path("medplib-reviewed-corpus.zip", data), summary)


def summary_line(summary: ExportSummary) -> str:
    tasks = ", ".join(f"{n} {task}" for task, n in sorted(summary.by_task.items()) if n)
    return (
        f"Exported {summary.items} answer(s) ({tasks}; {summary.corrected} with a corrected "
        f"mask) on {summary.images} image(s). Unzip, check with `medplib data check`, then "
        "fine-tune with `medplib train --stage moe --init CHECKPOINT --data DIR`."
    )


def export(
    web: Web,
    class_link_id: str | None,
    since: str | None,
    min_rating: float | None,
    actor_state: ActorState | None,
) -> dict[str, Any]:
    """Review tab: the zip for download and a line saying what is in it."""
    try:
        made = export_zip(web, class_link_id, since, min_rating, actor_state)
    except UserFacingError as exc:
        return {"dataset_status": f"⚠ {render.escape_text(str(exc))}", "dataset_file": None}
    return {"dataset_file": made.path, "dataset_status": summary_line(made.summary)}
