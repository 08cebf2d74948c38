"""A progress bar for long host-side work (training, evaluation), on rich."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Bar:
    def __init__(self, progress: Progress, task: int) -> None:
        self.progress, self.task = progress, task
        self.recent: deque[float] = deque(maxlen=20)

    def update(self, completed: int, returns: list[float] = ()) -> None:
        self.recent.extend(returns)
        info = f"return {sum(self.recent) / len(self.recent):.3f}" if self.recent else ""
        self.progress.update(self.task, completed=completed, info=info)


@contextmanager
def progress_bar(title: str, total: int) -> Iterator[_Bar]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=False) as progress:
        yield _Bar(progress, progress.add_task(title, total=total, info=""))
