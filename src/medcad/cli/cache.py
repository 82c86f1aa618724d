"""``medcad cache build DATA``: convert every scan of a LUNA16-layout folder once for training."""

from __future__ import annotations

from pathlib import Path

import typer

cache_app = typer.Typer(help="The training scan cache (uncompressed memory-mappable arrays).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    cache_app.command("build")(build)
    app.add_typer(cache_app, name="cache")


def build(
    data: Path = typer.Argument(..., help="LUNA16-layout folder (subset*/<uid>.mhd ...)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Cache folder (default DATA/.medcad-cache)."),
    verify: bool = typer.Option(False, "--verify", help="Also check every array's checksum (reads them all)."),
) -> None:
    """Build (or repair) the cache: each scan read once; missing, stale or corrupt entries rebuilt."""
    from collections import Counter

    from rich.console import Console
    from rich.progress import Progress

    from medcad.data.cache import ScanCache

    cache = ScanCache.for_data(data, cache_dir)
    with Progress(transient=True) as progress:
        task = progress.add_task(f"caching {len(cache.sources)} scan(s)", total=len(cache.sources))
        before = cache.build(deep=verify, progress=lambda done, total: progress.update(task, completed=done))
    counts = Counter(before.values())
    rebuilt = sum(n for status, n in counts.items() if status != "ok")
    Console().print(f"{len(before)} scan(s) in {cache.root}: {counts.get('ok', 0)} up to date, {rebuilt} built "
                    f"({counts.get('missing', 0)} new, {counts.get('stale', 0)} stale, {counts.get('corrupt', 0)} corrupt)")
