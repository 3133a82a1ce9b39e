"""`medplib data`: check MeCoVQA files, merge SA-Med2D instance masks, build a demo corpus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medplib.errors import UserInputError

DEFAULT_REALDATA = Path("../shared/realdata")  # relative to the repository root


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("data", help="check, merge masks for, or build MeCoVQA-format data")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    check = actions.add_parser("check", help="report every bad record of a MeCoVQA JSON file")
    check.add_argument("file", type=Path, help="MeCoVQA JSON file (a list of records)")
    check.add_argument("--images", type=Path, required=True, help="root the image paths are under")
    check.add_argument("--no-files", action="store_true", help="check structure and tags only")
    check.set_defaults(func=_check)

    merge = actions.add_parser(
        "merge-masks", help="build masks_merged/ class masks from SA-Med2D instance masks"
    )
    merge.add_argument("--images", type=Path, required=True, help="SA-Med2D root (images/, masks/)")
    merge.add_argument("--out", type=Path, default=None, help="default: ROOT/masks_merged")
    merge.set_defaults(func=_merge)

    build = actions.add_parser("build", help="build a synthetic + real demo corpus")
    build.add_argument("--out", type=Path, required=True, help="new or empty folder")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument(
        "--synthetic-per-modality",
        type=int,
        default=None,
        metavar="N",
        help="synthetic images per modality, split 80/10/10 (default 500)",
    )
    build.add_argument(
        "--realdata",
        type=Path,
        default=None,
        help=f"shared realdata folder (default {DEFAULT_REALDATA})",
    )
    build.add_argument("--no-realdata", action="store_true", help="synthetic images only")
    build.add_argument("--image-size", type=int, default=None, help="synthetic side (default 128)")
    build.add_argument("--small", action="store_true", help="tiny corpus for tests (seconds)")
    build.add_argument("--workers", type=int, default=1, help="processes for synthetic images")
    build.add_argument("--overwrite", action="store_true", help="rebuild an existing corpus")
    build.set_defaults(func=_build)


def _check(args: argparse.Namespace) -> int:
    from medplib.data.mecovqa import format_report, read_mecovqa

    report = read_mecovqa(args.file, args.images, check_files=not args.no_files)
    for line in format_report(report):
        print(line)
    return 0 if report.counts.valid else 1


def _merge(args: argparse.Namespace) -> int:
    from medplib.data.merge_masks import merge_masks

    out = args.out if args.out is not None else args.images / "masks_merged"
    report = merge_masks(args.images, out)
    for problem in report.problems:
        print(problem)
    print(
        f"{report.written} class masks written to {out} from {report.instances} instance masks "
        f"({report.groups} image/class groups, {report.resized} resized, "
        f"{report.ignored} other files ignored, {len(report.problems)} problems)"
    )
    return 0 if report.written or not report.groups else 1


def _build(args: argparse.Namespace) -> int:
    from medplib.data.build import BuildConfig, build_corpus

    realdata: Path | None
    if args.no_realdata:
        realdata = None
    elif args.realdata is not None:
        if not args.realdata.is_dir():
            raise UserInputError(f"--realdata {args.realdata} is not a folder.")
        realdata = args.realdata
    elif DEFAULT_REALDATA.is_dir():
        realdata = DEFAULT_REALDATA
    else:
        print(
            f"medplib data build: realdata folder {DEFAULT_REALDATA.resolve()} not found; "
            "building a synthetic-only corpus (pass --realdata PATH to include real images)",
            file=sys.stderr,
        )
        realdata = None
    changes = {
        "seed": args.seed,
        "realdata": realdata,
        "workers": args.workers,
        "overwrite": args.overwrite,
    }
    if args.synthetic_per_modality is not None:
        changes["synthetic_per_modality"] = args.synthetic_per_modality
    if args.image_size is not None:
        changes["image_size"] = args.image_size
    config = (
        BuildConfig.small(args.out, **changes) if args.small else BuildConfig(args.out, **changes)
    )
    result = build_corpus(config)
    for task, splits in result.records.items():
        print(f"{task}: " + ", ".join(f"{s} {n}" for s, n in splits.items()))
    print(f"{result.images} images, {result.masks} masks in {result.out} ({result.seconds:.1f} s)")
    if result.notes:
        print(f"{len(result.notes)} real-data notes (skipped items) listed in data_card.md")
    return 0
