"""What a training run shows and records: a progress bar per epoch, a metrics table row per epoch,
TensorBoard scalars and the history as CSV + PNG.

``RunLogger`` bundles them so the fit loop calls three methods (``progress``, ``epoch_end``,
``close``). Callbacks that want more (histograms, figures) use ``RunLogger.tensorboard`` directly.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from medcad.io.atomic import write_text_atomic

HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
TENSORBOARD_DIR = "tensorboard"


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class EpochTable:
    """Prints one table row per epoch with fixed column widths, the header above the first row."""

    def __init__(self, console, min_width: int = 9):
        self.console = console
        self.min_width = min_width
        self.columns: list[str] | None = None

    def print_row(self, row: Mapping[str, object]) -> None:
        from rich.table import Table

        first = self.columns is None
        if first:
            self.columns = list(row)
        table = Table(show_header=first, box=None, pad_edge=False, show_edge=False, padding=(0, 1),
                      header_style="bold")
        for name in self.columns:
            width = max(len(name), self.min_width)
            table.add_column(name, justify="right", min_width=width, max_width=width, no_wrap=True)
        table.add_row(*(_format(row.get(name, "")) for name in self.columns))
        self.console.print(table)


class TensorBoardLog:
    """TensorBoard scalars under ``log_dir``; the writer is created on first use."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def scalars(self, row: Mapping[str, object], step: int) -> None:
        """Logs every number of ``row`` as ``train/loss``-style tags (``train_loss`` -> ``train/loss``)."""
        for name, value in row.items():
            if name == "epoch" or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(name.replace("_", "/", 1), value, step)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def write_history_csv(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """Writes the per-epoch history as CSV (the union of all columns), atomically."""
    columns = list(dict.fromkeys(name for row in rows for name in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def plot_history(rows: Sequence[Mapping[str, object]], path: str | Path,
                 quantities: Sequence[str] | None = None, columns: int | None = None) -> Path:
    """One panel per quantity (loss, accuracy, ...), train and validation curves against the epoch.

    ``quantities`` picks the panels (default: every logged one, and the learning rate);
    ``columns`` the panels per line (default up to 3).
    """
    from medcad.reports.plots import _figure, _save

    if quantities is None:
        quantities = list(dict.fromkeys(name.split("_", 1)[1] for row in rows for name in row
                                        if name.startswith(("train_", "val_"))))
        quantities += [name for name in ("lr",) if any(name in row for row in rows)]
    quantities = list(quantities)
    columns = columns or min(len(quantities), 3) or 1
    lines = -(-len(quantities) // columns) or 1
    figure, _ = _figure(4.0 * columns, 3.0 * lines)
    figure.clear()
    epochs = [row["epoch"] for row in rows]
    for index, quantity in enumerate(quantities):
        axes = figure.add_subplot(lines, columns, index + 1)
        names = ("lr",) if quantity == "lr" else (f"train_{quantity}", f"val_{quantity}")
        for name in names:
            points = [(e, row[name]) for e, row in zip(epochs, rows) if isinstance(row.get(name), (int, float))]
            if points:
                axes.plot(*zip(*points), marker=".", label=name.split("_", 1)[0] if name != "lr" else "lr")
        axes.set_title(quantity)
        axes.set_xlabel("epoch")
        if quantity == "lr":
            axes.set_yscale("log")
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    return _save(figure, path)


class RunLogger:
    """Terminal progress and table, TensorBoard scalars and history files of one training run.

    Args:
        run_dir: folder for ``history.csv``, ``history.png`` and ``tensorboard/`` (None: terminal only).
        quiet: no progress bar and no table (tests, scripts).
    """

    def __init__(self, run_dir: str | Path | None = None, tensorboard: bool = True, quiet: bool = False,
                 console=None):
        from rich.console import Console

        self.run_dir = None if run_dir is None else Path(run_dir)
        self.console = console or Console(quiet=quiet)
        if not self.console.is_terminal:  # logs and pipes: room for the whole metrics row
            self.console.width = max(self.console.width, 200)
        self.quiet = quiet
        self.table = EpochTable(self.console)
        self.tensorboard = TensorBoardLog(self.run_dir / TENSORBOARD_DIR) if tensorboard and self.run_dir else None

    @contextlib.contextmanager
    def progress(self, total: int | None, description: str) -> Iterator[Callable[[], None]]:
        """A transient progress bar over batches; yields the function that advances it by one."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        disabled = self.quiet or not self.console.is_terminal
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=self.console, transient=True, disable=disabled) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)

    def epoch_end(self, row: Mapping[str, object], history: Sequence[Mapping[str, object]]) -> None:
        """Prints the row, logs it to TensorBoard and rewrites the history files."""
        if not self.quiet:
            self.table.print_row(row)
        if self.tensorboard is not None:
            self.tensorboard.scalars(row, int(row["epoch"]))
        if self.run_dir is not None:
            write_history_csv(history, self.run_dir / HISTORY_CSV)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def close(self, history: Sequence[Mapping[str, object]] = ()) -> None:
        """Draws the history figure and closes TensorBoard."""
        if self.run_dir is not None and history:
            plot_history(history, self.run_dir / HISTORY_PNG)
        if self.tensorboard is not None:
            self.tensorboard.close()
