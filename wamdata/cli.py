"""`wamdata ...`: parses arguments and calls the library. Every command is a library function first."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from wamdata.errors import ConfigError, WamdataError


def _resolution(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be WxH (e.g. 320x180), got {text!r}") from None


def _at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value
    return parse


def _options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--option takes key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v
    return out


def cmd_convert(args) -> int:
    from pipelines.convert_job import run
    from wamdata.convert import ConvertConfig

    config = ConvertConfig(
        source=args.source, input=args.input, output=args.output,
        options={**({"trust_pickle": "true"} if args.trust_pickle else {}), **_options(args.option)},
        workers=args.workers if args.workers is not None or args.ray_address else 2,
        ray_address=args.ray_address, shard_size_mb=args.shard_size_mb,
        video_codec=args.video_codec, resolution=args.resolution, crf=args.crf, fast_decode=args.fast_decode,
        limit=args.limit, stats=not args.no_stats,
        max_failures=args.max_failures, overwrite=args.overwrite, retry_failed=args.retry_failed,
        quiet=args.quiet,
    )
    report = run(config)
    print(report.summary())
    if not report.ok:
        print(f"error: {report.failures_total} failed items > --max-failures {args.max_failures} "
              f"(see {args.output}/failures.jsonl)", file=sys.stderr)
        return 1
    return 0


def cmd_sources(args) -> int:
    from wamdata.sources import converter_names, get_converter

    for name in converter_names():
        cls = get_converter(name)
        opts = ", ".join(f"{n}: {t} = {d!r}" for n, t, d in cls.describe_options()) or "no options"
        doc = cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""
        doc = doc.strip().splitlines()[0] if doc.strip() else ""
        print(f"{name:<14} {cls.family:<17} {doc}")
        print(f"{'':<14} options: {opts}")
    return 0


def cmd_info(args) -> int:
    from wamdata.report import dataset_summary, format_summary

    summary = dataset_summary(args.dataset)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_validate(args) -> int:
    from wamdata.format.check import check_dataset

    if args.repair and not args.deep:
        raise ConfigError("validate: --repair needs --deep (it repairs what the deep check finds)")
    report = check_dataset(args.dataset, decode=not args.no_decode, deep=args.deep)
    print(report.summary())
    if not args.repair or report.ok:
        return 0 if report.ok else 1
    from pipelines.executors import RayExecutor
    from wamdata.repair import repair_dataset

    workers = args.workers if args.workers is not None or args.ray_address else 2
    with RayExecutor(workers=workers, address=args.ray_address) as executor:
        repaired = repair_dataset(args.dataset, executor, check=report)
    print(repaired.summary())
    return 0 if repaired.ok else 1


def cmd_stats(args) -> int:
    from pipelines.stats_job import compute_stats
    from wamdata.stats_html import dataset_parts, write_report
    from wamdata.stats_report import format_report, summarize

    for flag, out in (("--json", args.json), ("--html", args.html)):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise ConfigError(f"{flag} {out}: its folder does not exist")   # before the whole pass, not after
    with dataset_parts(args.dataset) as parts:   # a manifest of several datasets: one report each
        done = []
        for part in parts:
            stats = compute_stats(part.path, workers=args.workers, ray_address=args.ray_address,
                                  progress=not args.quiet)
            summary = {**summarize(part.path, stats, by=args.by), "path": part.where}
            print(format_report(summary))
            done.append((part, stats, summary))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(done[0][2] if len(done) == 1 else {p.label: s for p, _, s in done}, f, indent=1)
        if args.html:
            print(f"HTML report written to {write_report(args.html, [(p, st) for p, st, _ in done], args.dataset)}")
    return 0


def cmd_export(args) -> int:
    from wamdata.export import FORMATS

    out = FORMATS[args.format](args.dataset, args.output, cameras=args.cameras, repo_id=args.repo_id,
                               overwrite=args.overwrite, progress=not args.quiet)
    print(f"exported {args.dataset} as {args.format} to {out}")
    return 0


def cmd_curate(args) -> int:
    from wamdata import curate

    if not (args.signals or args.filter or args.drop_idle):
        raise ConfigError("curate: give --signals, and/or --filter EXPR / --drop-idle with --out VIEW.yaml or --dry-run")
    if args.signals:
        from pipelines.curate_job import compute_signals

        table = compute_signals(args.dataset, workers=args.workers, ray_address=args.ray_address,
                                progress=not args.quiet)
        print(f"signals of {table.num_rows} episodes in {args.dataset}/{curate.SIGNALS_FILE}")
    if args.filter or args.drop_idle:
        if not args.out and not args.dry_run:
            raise ConfigError("curate: --filter / --drop-idle need --out VIEW.yaml or --dry-run")
        view = curate.curate_view(args.dataset, args.filter, drop_idle=args.drop_idle)
        print(curate.format_summary(view), end="")
        if args.out and not args.dry_run:
            print(f"view written to {curate.write_view(view, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wamdata", description="Ingest, curate and stream World Action Model data.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a source into a wamdata dataset (Ray, resumable)")
    c.add_argument("--source", required=True, help="converter name (see `wamdata sources`)")
    c.add_argument("--input", required=True, help="source root (local path or fsspec URL)")
    c.add_argument("--output", required=True, help="dataset folder (local path or fsspec URL)")
    c.add_argument("--workers", type=_at_least(1), default=None,
                   help="CPUs of the local Ray (default 2); with --ray-address, the most tasks at once "
                        "(default: every CPU of the cluster)")
    c.add_argument("--ray-address", default=None, help="join a Ray cluster instead (e.g. auto)")
    c.add_argument("--shard-size-mb", type=float, default=512, help="roll to a new shard past this size")
    c.add_argument("--video-codec", choices=["h264", "av1", "copy"], default="h264",
                   help="encode H.264 (default) or AV1, or stream-copy H.264/HEVC/AV1 sources")
    c.add_argument("--crf", type=int, default=None, help="encoder quality (default 18 for h264, 30 for av1)")
    c.add_argument("--fast-decode", action="store_true",
                   help="h264: x264 tune=fastdecode, decodes ~1.5x faster for training, ~25%% more bytes")
    c.add_argument("--resolution", type=_resolution, default=None, help="resize frames to WxH")
    c.add_argument("--limit", type=_at_least(1), default=None, help="convert only the first N source items")
    c.add_argument("--max-failures", type=_at_least(0), default=0, help="exit 0 while failures <= N (default 0)")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="converter option")
    c.add_argument("--no-stats", action="store_true",
                   help="skip the statistics computed while converting (stats.json; `wamdata stats` writes it later)")
    c.add_argument("--trust-pickle", action="store_true",
                   help="let the converter unpickle pickled source files (runs code they name; e.g. UMI's "
                        "dataset_plan.pkl); only for converters with a trust_pickle option")
    c.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    c.add_argument("--retry-failed", action="store_true", help="read items that failed before again")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(fn=cmd_convert)

    s = sub.add_parser("sources", help="list converters, their family and options")
    s.set_defaults(fn=cmd_sources)

    i = sub.add_parser("info", help="counts, hours, sources, cameras and features of a dataset")
    i.add_argument("dataset")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(fn=cmd_info)

    v = sub.add_parser("validate", help="check index vs shards, decode every episode, check values")
    v.add_argument("dataset")
    v.add_argument("--no-decode", action="store_true", help="skip decoding videos (faster)")
    v.add_argument("--deep", action="store_true",
                   help="read every shard whole: each member's checksum, naming the shard, episode and member")
    v.add_argument("--repair", action="store_true",
                   help="with --deep: convert the damaged episodes again from their recorded source (Ray)")
    v.add_argument("--workers", type=_at_least(1), default=None, help="--repair: CPUs of the local Ray (default 2)")
    v.add_argument("--ray-address", default=None, help="--repair: join a Ray cluster instead (e.g. auto)")
    v.set_defaults(fn=cmd_validate)

    st = sub.add_parser("stats", help="report + per-embodiment normalisation statistics (writes stats.json)")
    st.add_argument("dataset", help="dataset folder, a view, or a manifest (.yaml; several datasets: a report each)")
    st.add_argument("--by", choices=["source", "embodiment", "family", "task"], default="embodiment",
                    help="breakdown key (default embodiment)")
    st.add_argument("--json", metavar="FILE", default=None, help="also write the whole report as JSON")
    st.add_argument("--html", metavar="FILE", default=None,
                    help="also write a self-contained HTML report (plots, sample frames, quality signals, failures)")
    st.add_argument("--workers", type=_at_least(0), default=0, help="Ray tasks over N CPUs (default 0: in-process)")
    st.add_argument("--ray-address", default=None, help="join a Ray cluster instead (e.g. auto)")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(fn=cmd_stats)

    cu = sub.add_parser("curate", help="quality signals (side table) and filters -> a view (no data copied)")
    cu.add_argument("dataset")
    cu.add_argument("--signals", action="store_true", help="compute the per-episode quality signals (resumable)")
    cu.add_argument("--filter", action="append", default=[], metavar="EXPR",
                    help="keep episodes where EXPR holds, over index and signal columns (repeatable: all hold), "
                         "e.g. 'success == true and blur > 80 and duration_s >= 2'")
    cu.add_argument("--drop-idle", action="store_true", help="cut idle segments out as kept step ranges")
    cu.add_argument("--out", metavar="VIEW.yaml", default=None, help="write the view (a manifest) here")
    cu.add_argument("--dry-run", action="store_true", help="print what would be kept per source, write nothing")
    cu.add_argument("--workers", type=_at_least(0), default=2, help="Ray tasks over N CPUs for --signals "
                                                                   "(default 2; 0: in-process)")
    cu.add_argument("--ray-address", default=None, help="join a Ray cluster instead (e.g. auto)")
    cu.add_argument("--quiet", action="store_true", help="no progress bar")
    cu.set_defaults(fn=cmd_curate)

    ex = sub.add_parser("export", help="write a dataset or a view in another format (LeRobot v3.0, "
                                       "Hugging Face datasets, diffusion-policy zarr)")
    ex.add_argument("dataset", help="dataset folder, or a view / manifest (.yaml) of one dataset")
    ex.add_argument("--format", choices=["lerobot", "hf", "zarr"], default="lerobot",
                    help="target format (default lerobot)")
    ex.add_argument("--output", required=True, help="folder to create (absent or empty), or an unfinished "
                                                    "export of the same command, which resumes")
    ex.add_argument("--cameras", nargs="+", default=None, help="cameras to export (default: all)")
    ex.add_argument("--repo-id", default="wamdata/export", help="LeRobot repo id recorded in the export")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace --output if it holds an export (without it an unfinished one resumes)")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    ex.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except WamdataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
