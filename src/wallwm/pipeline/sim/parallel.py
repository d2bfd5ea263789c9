"""Recording episodes one by one or in spawned processes, in the same order either way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

C = TypeVar("C")
Summary = dict[str, Any]


def run_jobs(
    record: Callable[[str, int, C, Path], Summary],
    jobs: list[tuple[str, int]],
    cfg: C,
    out: Path,
    workers: int,
    on_episode: Callable[[Summary], None] | None = None,
) -> list[Summary]:
    """``record(task, index, cfg, out)`` for every job; summaries in the order of ``jobs``.

    With ``workers`` > 1 the episodes record in that many spawned processes (MuJoCo rendering
    is single-threaded; spawned, not forked: MuJoCo's GL context and Ray's threads do not
    survive a fork); ``on_episode`` sees each summary as it finishes.
    """
    if workers <= 1:
        results = []
        for task, i in jobs:
            results.append(record(task, i, cfg, out))
            if on_episode:
                on_episode(results[-1])
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    by_job: dict[tuple[str, int], Summary] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(record, t, i, cfg, out): (t, i) for t, i in jobs}
        for future in as_completed(futures):
            by_job[futures[future]] = future.result()
            if on_episode:
                on_episode(by_job[futures[future]])
    return [by_job[job] for job in jobs]


class RecorderConfig(Protocol):
    """What :func:`record_tasks` reads of a recorder's config."""

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks to record."""
        ...

    @property
    def episodes(self) -> int:
        """Episodes per task."""
        ...

    @property
    def workers(self) -> int:
        """Recording processes."""
        ...


R = TypeVar("R", bound=RecorderConfig)


def record_tasks(
    record: Callable[[str, int, R, Path], Summary],
    cfg: R,
    out: str | Path,
    robot: str,
    known: tuple[str, ...],
    on_episode: Callable[[Summary], None] | None = None,
) -> list[Summary]:
    """``cfg.episodes`` episodes of each of ``cfg.tasks`` under ``out``.

    A task the ``robot``'s recorder does not know (``known``) is a did-you-mean error.
    """
    import difflib

    for task in cfg.tasks:
        if task not in known:
            close = difflib.get_close_matches(task, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {robot} task {task!r} (choose from {known}){hint}")
    jobs = [(task, i) for task in cfg.tasks for i in range(cfg.episodes)]
    return run_jobs(record, jobs, cfg, Path(out), cfg.workers, on_episode)
