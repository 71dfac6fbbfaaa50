"""Running the cells of a grid: in parallel worker processes, resumable, never reusing a
result made with other settings.

Each cell writes ``<out>/<cell key>/result.json`` (and ``state.pt`` after every experience).
A cell with a result is skipped only when every setting that shaped it matches (the run's,
the data's and the backbone's, :func:`~.runner.run_settings`); otherwise it is refused with
the differences (:class:`~.runner.StaleResultError`) unless ``force`` reruns it.

Worker processes end with the main process (by an exception, Ctrl-C, SIGTERM, or within a
second of a SIGKILL), and a run folder is written by one process at a time (``run.lock``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .._files import LOCK_NAME, FolderBusyError, check_folder_name, folder_owner
from ..benchmarks import check_benchmark_arguments, make_benchmark
from ..benchmarks.fmnist import DEFAULT_HELDOUT
from ..models import model_normalization
from .grid import Cell
from .pretrain import pretrain_backbone
from .pretrain_vl import EMBEDDED_BLIP, pretrain_blip
from .runner import load_result, run, run_settings

__all__ = ["cell_data", "cell_folder", "execute_cells", "finished_results"]

_BENCHMARKS: Dict[str, object] = {}
"""Benchmarks built in this process, by their settings."""


def cell_data(cell: Cell) -> Dict:
    """The data settings of a cell: its benchmark arguments and the model's normalisation
    (and, for streams read from files, the tokenizer of a BLIP model's checkpoint)."""
    cfg = cell.cfg
    norm = model_normalization(cfg.model, cfg.model_kwargs.get("in_chans"))
    data = dict(cell.benchmark, normalization=dict(mean=list(norm.mean), std=list(norm.std)))
    if data.get("name") in ("fmnist", "fmnist_pretrained", "cluttered_fmnist"):
        data.setdefault("heldout_per_class", DEFAULT_HELDOUT)  # recorded: it shapes the stream
    if data.get("name") in ("vqa_sequence", "coco_class_captions"):
        data.setdefault("tokenizer", cfg.checkpoint or cfg.model)
    return data


def cell_folder(out: Path, cell: Cell) -> Path:
    """``out/<cell.key>``, the cell's run folder (a key that would leave ``out`` is refused)."""
    return Path(out) / check_folder_name(cell.key, f"grid cell {cell.index} named {cell.key!r}")


def _benchmark(data: Dict):
    key = repr(sorted(data.items()))
    if key not in _BENCHMARKS:
        kwargs = dict(data)
        name = kwargs.pop("name")
        n = kwargs.pop("normalization")
        _BENCHMARKS.clear()  # one at a time: streams can be large
        _BENCHMARKS[key] = make_benchmark(name, normalization=(n["mean"], n["std"]), **kwargs)
    return _BENCHMARKS[key]


def run_cell(cell: Cell, out: Path, threads: Optional[int] = None,
             log: Optional[Callable[[str], None]] = None) -> Dict:
    """Run one cell into ``out/<cell.key>/`` (resuming its ``state.pt``); returns the result."""
    if threads:
        torch.set_num_threads(threads)
    data = cell_data(cell)
    cfg = replace(cell.cfg, out_dir=str(cell_folder(out, cell)))
    return run(cfg, _benchmark(data), log=log, data=data)


def finished_results(cells: Sequence[Cell], out: Path) -> Tuple[Dict[str, Dict], List[str]]:
    """``(results by cell key, left out)``: the stored results of ``cells`` under ``out``
    made with the cells' settings; a result made with other settings, or a file that is not
    a run's result, is left out with a line saying why (never reported as this config's)."""
    results, left_out = {}, []
    for cell in cells:
        path = cell_folder(out, cell) / "result.json"
        try:
            stored = load_result(path, run_settings(cell.cfg, cell_data(cell)))
        except ValueError as e:  # StaleResultError too
            left_out.append(" ".join(str(e).split()))
            continue
        if stored is not None:
            results[cell.key] = stored
    return results, left_out


def execute_cells(cells: Sequence[Cell], out: Path, *, jobs: int = 1, force: bool = False,
                  threads: Optional[int] = None, log: Optional[Callable[[str], None]] = print,
                  progress: Optional[Callable[[int, int, Cell, Dict, float], None]] = None
                  ) -> List[Dict]:
    """Run the cells without a matching result, ``jobs`` at a time; return all results in
    cell order.

    :param jobs: worker processes (spawned; one torch thread each unless ``threads``).
    :param force: rerun cells whose stored result was made with other settings (or any).
    :param progress: called as ``progress(done, total, cell, result, seconds)``.
    :raises StaleResultError: a stored result differs in its settings and ``force`` is off
        (checked for every cell before any run starts).
    :raises ValueError: a cell to run has benchmark arguments its builder would refuse
        (:func:`~avalanche_cts.benchmarks.check_benchmark_arguments`, before any run starts).
    """
    out = Path(out)
    results: Dict[int, Dict] = {}
    todo: List[Cell] = []
    for cell in cells:
        folder = cell_folder(out, cell)
        path = folder / "result.json"
        settings = run_settings(cell.cfg, cell_data(cell))
        if force:
            with folder_owner(folder):
                for name in ("result.json", "state.pt"):
                    (folder / name).unlink(missing_ok=True)
            todo.append(cell)
            continue
        stored = load_result(path, settings, "--force replaces it")
        if stored is None:
            todo.append(cell)
        else:
            results[cell.index] = stored
            if (folder / LOCK_NAME).exists():  # its run was stopped after the result
                with contextlib.suppress(FolderBusyError), folder_owner(folder):
                    pass  # a dead holder's lock is taken over and removed
    for cell in todo:
        data = cell_data(cell)
        check_benchmark_arguments(data.pop("name"), data)
    if log and len(cells):
        log(f"{len(cells)} runs: {len(cells) - len(todo)} finished, {len(todo)} to run"
            + (f" in {jobs} processes" if jobs > 1 and len(todo) > 1 else ""))
    start = time.perf_counter()

    def finished(i: int, cell: Cell, res: Dict) -> None:
        results[cell.index] = res
        if progress:
            progress(i, len(todo), cell, res, time.perf_counter() - start)

    for spec in {c.cfg.embedded_backbone() for c in todo} - {None}:
        pretrain_backbone(spec, log=log)  # once, before workers start reading the cache
    if any(c.cfg.pretrained and c.cfg.checkpoint is None and c.cfg.model in EMBEDDED_BLIP
           for c in todo):
        pretrain_blip(log=log)
    if jobs <= 1 or len(todo) <= 1:
        for i, cell in enumerate(todo, 1):
            finished(i, cell, run_cell(cell, out, threads, log))
    else:
        _in_workers(todo, out, jobs, threads or 1, finished)
    return [results[c.index] for c in cells]


def _in_workers(todo: Sequence[Cell], out: Path, jobs: int, threads: int,
                finished: Callable[[int, Cell, Dict], None]) -> None:
    """Run ``todo`` in ``jobs`` spawned worker processes that end with this one: when it ends
    by an exception, Ctrl-C or SIGTERM it stops them; when it is killed, each worker's
    watchdog sees its pipe close and ends it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    # Workers hold the read end; only this process holds the write end, which the kernel closes
    # when it ends, however it ends (os.getppid() would still name a killed parent that is an
    # unreaped zombie, so a worker could not tell).
    parent_alive, parent_end = ctx.Pipe(duplex=False)
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_start,
                               initargs=(parent_alive,))
    try:
        with _sigterm_raises():
            futures = {pool.submit(run_cell, c, out, threads): c for c in todo}
            for i, fut in enumerate(as_completed(futures), 1):
                finished(i, futures[fut], fut.result())
    except BaseException:
        _stop_workers(pool)  # shuts the pool down
        raise
    else:
        pool.shutdown()
    finally:
        parent_end.close()
        parent_alive.close()


def _worker_start(parent_alive) -> None:
    """A worker leaves Ctrl-C to the main process (which stops it) and ends when its parent
    is gone (SIGKILL leaves the main process no time to stop it): ``parent_alive``, the read
    end of a pipe nobody writes to, reports end-of-file once the parent has ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        parent_alive.poll(None)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises ``SystemExit(143)`` in the main thread for the context (so the workers
    are stopped), instead of ending the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _stop_workers(pool) -> None:
    """Terminate the pool's workers (mid-run: their files are written atomically and resume)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    for p in workers:
        p.terminate()
    for p in workers:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    pool.shutdown(wait=True, cancel_futures=True)
