"""Evaluate one checkpoint on every split and task of a corpus from `medplib data build`.

    python -m medplib.eval.corpus --corpus var/demo-corpus --out var/demo-eval
    python -m medplib.eval.corpus --corpus DIR --out DIR --splits holdout --per-source 50
    python -m medplib.eval.corpus --corpus DIR --out DIR --from-reports   # summary only

A corpus holds ``TASK/SPLIT.json`` (tasks grounding, vqa, region; splits val, holdout,
zeroshot). Each pair gets a full `medplib eval` report (``OUT/SPLIT-TASK.json`` and its
predictions); ``OUT/summary.json`` and ``OUT/summary.md`` hold one row per split and source:

  grounding mDice   masks at sigmoid > 0.1 (the MedPLIB rule) and > 0.5, with a 95 % interval
                    for > 0.5 that resamples whole images (`metrics.image_bootstrap_ci`)
  closed accuracy   VQA questions with a closed (yes/no or choice) answer
  region accuracy   region questions answered right: closed ones by their answer, open ones
                    by the first structure named (``classes.json`` names), which must be the
                    one the reference names first
  Both accuracies come with a 95 % interval that resamples whole images, as mDice does.

``--per-source N`` keeps N evenly spaced records of each source in a file, so one large
source (most zero-shot records are white-blood-cell microscopy) does not drown the others
and every modality of a source is sampled; the summary states it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from medplib.errors import UserInputError
from medplib.eval.scoring import dice_key
from medplib.metrics import first_structure, image_bootstrap_ci, mean_of_groups_ci

T = TypeVar("T")

TASKS = ("grounding", "vqa", "region")
SPLITS = ("val", "holdout", "zeroshot")


def evenly_spaced(items: Sequence[T], k: int) -> list[T]:
    """`k` items spread evenly through `items` (the first, then every len/k-th), in order."""
    n = len(items)
    k = min(k, n)
    return [items[(j * n) // k] for j in range(k)] if k > 0 else []


def capped_records(records: Sequence[dict[str, Any]], per_source: int | None) -> list[dict]:
    """At most `per_source` records of each source, evenly spaced through the file and kept in
    file order (all when None).

    Corpus files are sorted by modality, so the first N of a source would be its first
    modalities only; evenly spaced picks cover all of them in proportion.
    """
    if per_source is None:
        return list(records)
    positions: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        positions.setdefault(str(record.get("source") or "unknown"), []).append(i)
    keep = {i for idx in positions.values() for i in evenly_spaced(idx, per_source)}
    return [r for i, r in enumerate(records) if i in keep]


REGION_RULE = (
    "closed region questions by their answer (closed accuracy); open ones by the first "
    "structure named, which must be the one the reference names first"
)


def region_correct(record: dict[str, Any], names: Sequence[str]) -> bool:
    """Whether one region answer is right (`record`: an evaluator text record)."""
    if record.get("closed"):
        return bool(record.get("closed_correct"))
    want = first_structure(str(record.get("reference") or ""), names)
    return want is not None and first_structure(str(record.get("answer") or ""), names) == want


def region_accuracy_by_source(
    records: Sequence[dict[str, Any]], names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per source: how many region questions, the share answered right and its 95 % interval
    (``ci95``, resampling images)."""
    tally = _by_source(
        records,
        lambda r: float(region_correct(r, names)) if r.get("task") == "region" else None,
    )
    return {
        s: {"count": len(v), "accuracy": sum(v) / len(v), "ci95": _ci(v, images)}
        for s, (v, images) in tally.items()
    }


def closed_accuracy_intervals(samples: Sequence[dict[str, Any]]) -> dict[str, list[float] | None]:
    """Per source: the 95 % interval of closed-question accuracy, resampling images (a VQA
    report's `samples`). The questions about one image are drawn together: they share the
    image the model may have misread."""
    by_source = _by_source(
        samples,
        lambda s: (
            float(s["closed_correct"])
            if s.get("closed") and s.get("closed_correct") is not None
            else None
        ),
    )
    return {source: _ci(right, images) for source, (right, images) in by_source.items()}


def _by_source(
    records: Sequence[dict[str, Any]], value: Callable[[dict[str, Any]], float | None]
) -> dict[str, tuple[list[float], list[str]]]:
    """Per source: (value, image) of each record `value` gives a number for (None: skipped)."""
    out: dict[str, tuple[list[float], list[str]]] = {}
    for record in records:
        got = value(record)
        if got is None:
            continue
        values, images = out.setdefault(str(record.get("source")), ([], []))
        values.append(got)
        images.append(str(record.get("image") or record.get("id")))
    return out


def _ci(values: Sequence[float], images: Sequence[str]) -> list[float] | None:
    ci = image_bootstrap_ci(values, images)
    return list(ci) if ci is not None else None


def structure_names(corpus: Path) -> list[str]:
    """The corpus's structure names (``classes.json``), which open region answers are judged by."""
    path = corpus / "classes.json"
    if not path.is_file():
        return []
    return [str(v) for v in json.loads(path.read_text()).values()]


REAL_MEAN = "mean of real sources"  # the summary row the real-data targets are read on


def _strict_dice_by_source(
    samples: Sequence[dict[str, Any]], key: str
) -> dict[str, tuple[list[float], list[str]]]:
    """Per source: (Dice at > 0.5, image) of each grounding sample; `key` names the Dice."""
    return _by_source(
        samples,
        lambda s: (
            float(s[key])
            if s.get("task", "grounding") == "grounding" and s.get(key) is not None
            else None
        ),
    )


def strict_dice_intervals(
    samples: Sequence[dict[str, Any]], key: str
) -> dict[str, list[float] | None]:
    """Per source: the 95 % interval of its mDice at > 0.5, resampling images (a report's
    grounding `samples`; `key` names their Dice at > 0.5). The real sources together, when
    there are two or more, under `REAL_MEAN`: the interval of the mean over them."""
    by_source = _strict_dice_by_source(samples, key)
    out = {source: _ci(values, images) for source, (values, images) in by_source.items()}
    real = {s: g for s, g in by_source.items() if s != "synthetic"}
    if len(real) >= 2:
        ci = mean_of_groups_ci(real)
        out[REAL_MEAN] = list(ci) if ci is not None else None
    return out


def summary_rows(reports: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (split, source) from the reports of one checkpoint, keyed (split, task)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(split: str, source: str) -> dict[str, Any]:
        return rows.setdefault((split, source), {"split": split, "source": source})

    for (split, task), report in sorted(reports.items()):
        if task == "grounding":
            g = report.get("grounding") or {}
            strict = (g.get("by_threshold") or {}).get("0.5") or {}
            for source, block in (g.get("per_source") or {}).items():
                r = row(split, source)
                r["grounding_n"] = block.get("count")
                r["mDice"] = block.get("mDice")
                r["mDice_0.5"] = (strict.get("per_source") or {}).get(source, {}).get("mDice")
            try:
                key = dice_key(report, "0.5")
            except ValueError:  # no masks at > 0.5 in this report: nothing to resample
                intervals = {}
            else:
                intervals = strict_dice_intervals(report.get("samples") or [], key)
            for source, ci in intervals.items():
                if source != REAL_MEAN:
                    row(split, source)["mDice_0.5_ci95"] = ci
            real = [rows[(split, s)] for s in (g.get("per_source") or {}) if s != "synthetic"]
            if len(real) >= 2:
                r = row(split, REAL_MEAN)
                r["grounding_n"] = sum(x.get("grounding_n") or 0 for x in real)
                for name in ("mDice", "mDice_0.5"):
                    got = [x[name] for x in real if x.get(name) is not None]
                    r[name] = sum(got) / len(got) if len(got) == len(real) else None
                r["mDice_0.5_ci95"] = intervals.get(REAL_MEAN)
        else:
            text = (report.get("text") or {}).get("per_source") or {}
            if task == "vqa":
                closed_ci = closed_accuracy_intervals(report.get("samples") or [])
                for source, block in text.items():
                    r = row(split, source)
                    r["vqa_n"] = block.get("count")
                    r["closed_n"] = block.get("closed_count")
                    r["closed_accuracy"] = block.get("closed_accuracy")
                    r["closed_accuracy_ci95"] = closed_ci.get(source)
                    r["vqa_token_f1"] = block.get("token_f1")
            else:
                region = (report.get("region_accuracy") or {}).get("per_source") or {}
                for source, block in region.items():
                    r = row(split, source)
                    r["region_n"] = block.get("count")
                    r["region_accuracy"] = block.get("accuracy")
                    r["region_accuracy_ci95"] = block.get("ci95")
    order = {s: i for i, s in enumerate(SPLITS)}
    place = {"synthetic": 0, REAL_MEAN: 2}  # each split: synthetic, its sources, their mean
    return sorted(
        rows.values(),
        key=lambda r: (order.get(r["split"], 99), place.get(r["source"], 1), r["source"]),
    )


def closed_kind_rows(reports: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Closed-question accuracy per (split, task, question kind), all sources together.

    Only kinds with closed questions, and only where the corpus names its kinds
    (``question_kind`` records from `medplib data build`).
    """
    out = []
    for (split, task), report in reports.items():
        kinds = (report.get("text") or {}).get("per_question_kind") or {}
        for kind, block in sorted(kinds.items()):
            if block.get("closed_count"):
                out.append(
                    {
                        "split": split,
                        "task": task,
                        "question_kind": kind,
                        "closed_n": block["closed_count"],
                        "closed_accuracy": block["closed_accuracy"],
                    }
                )
    order = {s: i for i, s in enumerate(SPLITS)}
    return sorted(out, key=lambda r: (order.get(r["split"], 99), r["task"], r["question_kind"]))


def kinds_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| split | task | question kind | closed n | closed acc. |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['task']} | {r['question_kind']} | {r['closed_n']} | "
            f"{r['closed_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def markdown(rows: Sequence[dict[str, Any]], per_source: int | None) -> str:
    def f(value: Any) -> str:
        return "–" if value is None else f"{value:.3f}"

    def n(value: Any) -> str:
        return "–" if value is None else str(value)

    def interval(value: Any) -> str:
        return "–" if value is None else f"{value[0]:.2f}–{value[1]:.2f}"

    lines = [
        "| split | source | grounding n | mDice (>0.1) | mDice (>0.5) | 95 % CI (>0.5) | "
        "closed n | closed acc. | 95 % CI | region n | region acc. | 95 % CI |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['source']} | {n(r.get('grounding_n'))} | {f(r.get('mDice'))} | "
            f"{f(r.get('mDice_0.5'))} | {interval(r.get('mDice_0.5_ci95'))} | "
            f"{n(r.get('closed_n'))} | {f(r.get('closed_accuracy'))} | "
            f"{interval(r.get('closed_accuracy_ci95'))} | {n(r.get('region_n'))} | "
            f"{f(r.get('region_accuracy'))} | {interval(r.get('region_accuracy_ci95'))} |"
        )
    if per_source is not None:
        lines.append("")
        lines.append(f"At most {per_source} records per source and file.")
    return "\n".join(lines)


def evaluate_corpus(
    predictor: Any,
    corpus: Path,
    out: Path,
    *,
    splits: Sequence[str] = SPLITS,
    tasks: Sequence[str] = TASKS,
    per_source: int | None = None,
    max_new_tokens: int = 64,
) -> dict[str, Any]:
    """Reports for each (split, task) file present, then the summary; returns the summary."""
    from medplib.eval.evaluator import EvalConfig, evaluate_model, write_report

    out.mkdir(parents=True, exist_ok=True)
    reports: dict[tuple[str, str], dict[str, Any]] = {}
    config = EvalConfig(max_new_tokens=max_new_tokens)
    names = structure_names(corpus)
    for split in splits:
        for task in tasks:
            path = corpus / task / f"{split}.json"
            if not path.is_file():
                continue
            records = capped_records(json.loads(path.read_text()), per_source)
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / path.name
                data.write_text(json.dumps(records))
                result = evaluate_model(
                    predictor,
                    data,
                    corpus,
                    config=config,
                    inputs={"file": str(path), "per_source": per_source},
                )
            if task == "region":
                result.report["region_accuracy"] = region_block(result.report, names)
            report_path = out / f"{split}-{task}.json"
            write_report(
                result,
                report_path,
                predictions_path=report_path.with_name(f"{split}-{task}.predictions.jsonl"),
            )
            reports[(split, task)] = result.report
            print(f"{split}/{task}: {result.scored} scored", file=sys.stderr)
    if not reports:
        raise UserInputError(f"{corpus} holds no TASK/SPLIT.json file for {list(splits)}.")
    return write_summary(
        out,
        reports,
        checkpoint_id=getattr(predictor, "checkpoint_id", None),
        corpus=corpus,
        per_source=per_source,
        max_new_tokens=max_new_tokens,
    )


def region_block(report: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A region report's ``region_accuracy``: the rule and the per-source tallies."""
    samples = report.get("samples") or []
    return {"rule": REGION_RULE, "per_source": region_accuracy_by_source(samples, names)}


def write_summary(
    out: Path,
    reports: dict[tuple[str, str], dict[str, Any]],
    *,
    checkpoint_id: str | None,
    corpus: Path,
    per_source: int | None,
    max_new_tokens: int,
) -> dict[str, Any]:
    """``OUT/summary.json`` and ``OUT/summary.md`` from the reports; returns the summary."""
    rows = summary_rows(reports)
    kinds = closed_kind_rows(reports)
    summary = {
        "checkpoint_id": checkpoint_id,
        "corpus": str(corpus),
        "per_source": per_source,
        "max_new_tokens": max_new_tokens,
        "rows": rows,
        "closed_by_question_kind": kinds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    text = markdown(rows, per_source)
    if kinds:
        text += "\n\nClosed questions per kind (all sources):\n\n" + kinds_markdown(kinds)
    (out / "summary.md").write_text(text + "\n")
    return summary


def summarise_reports(out: Path, corpus: Path) -> dict[str, Any]:
    """Rebuild the summary from the reports an earlier run left in `out`, without the model:
    the per-case records are in the reports, so a new summary column needs no new run.

    The checkpoint, record cap and token limit are read from the reports, which must agree.
    """
    reports: dict[tuple[str, str], dict[str, Any]] = {}
    for split in SPLITS:
        for task in TASKS:
            path = out / f"{split}-{task}.json"
            if not path.is_file():
                continue
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise UserInputError(f"{path} is not a readable report: {exc}") from None
            if not isinstance(report, dict) or not isinstance(report.get("inputs"), dict):
                raise UserInputError(f"{path} is not a `medplib eval` report (no 'inputs').")
            reports[(split, task)] = report
    if not reports:
        raise UserInputError(
            f"{out} holds no SPLIT-TASK.json report; run without --from-reports first."
        )
    settings = {
        key: {json.dumps(r["inputs"].get(key)) for r in reports.values()}
        for key in ("checkpoint_id", "per_source", "max_new_tokens")
    }
    mixed = [key for key, values in settings.items() if len(values) > 1]
    if mixed:
        raise UserInputError(
            f"the reports in {out} were made with different {', '.join(mixed)}; "
            "one summary needs one run's reports."
        )
    first = next(iter(reports.values()))["inputs"]
    names = structure_names(corpus)
    for (_, task), report in reports.items():
        if task == "region":
            report["region_accuracy"] = region_block(report, names)
    return write_summary(
        out,
        reports,
        checkpoint_id=first.get("checkpoint_id"),
        corpus=corpus,
        per_source=first.get("per_source"),
        max_new_tokens=first.get("max_new_tokens"),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", type=Path, required=True, help="from `medplib data build`")
    p.add_argument("--out", type=Path, required=True, help="reports and summary.{json,md}")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped demo")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--per-source", type=int, default=None, help="records per source and file")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--from-reports",
        action="store_true",
        help="rebuild summary.{json,md} from the reports already in --out; runs no model",
    )
    args = p.parse_args(argv)
    if args.from_reports:
        try:
            summary = summarise_reports(args.out, args.corpus)
        except UserInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(markdown(summary["rows"], summary["per_source"]))
        return 0
    from medplib.predictor import MedPLIBPredictor

    try:
        predictor = MedPLIBPredictor.from_pretrained(args.checkpoint)
        summary = evaluate_corpus(
            predictor,
            args.corpus,
            args.out,
            splits=args.splits,
            tasks=args.tasks,
            per_source=args.per_source,
            max_new_tokens=args.max_new_tokens,
        )
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(summary["rows"], args.per_source))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
