"""Files written safely by concurrent processes.

* :func:`atomic_write`: write to a temporary name unique to this process, then rename over
  the target in one step: readers see the old file or the new one, never a part, and a peer
  that finished first is simply replaced by an equal file.
* :func:`file_lock`: an exclusive lock (``fcntl.flock``) held while a shared cache entry is
  made; a second process waits and then finds the entry made.
* :func:`folder_owner`: a run folder written by one process at a time; its lock file names
  the holder (pid, host, start time) and a lock left by a dead process is taken over.

Locks are ``flock`` locks, which the kernel drops when their holder ends (even by SIGKILL).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Union

__all__ = ["FolderBusyError", "atomic_write", "check_folder", "check_folder_name", "file_lock",
           "folder_owner", "portable_path", "user_path", "write_text"]

PathLike = Union[str, Path]
LOCK_NAME = "run.lock"
"""The lock file of a run folder."""


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary path next to ``path`` and rename it to
    ``path`` (creating the folder); the temporary file is removed if ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def portable_path(path: PathLike) -> str:
    """``path`` as result files record it: relative to the working directory (the project)
    when it lies inside it, else relative to its results folder (its parent), so a result
    does not name the machine it was made on."""
    path = user_path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def _flock(path: Path, wait: bool) -> Iterator[Optional[IO]]:
    """An exclusive ``flock`` on ``path`` (created if needed): yields the open file, or
    ``None`` when ``wait`` is off and another process holds it. The kernel releases it when
    its holder ends in any way, so a lock file left by a dead process is free to take."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            yield None
            return
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()  # the holder removed the file as we opened it: lock the new one
    try:
        yield f
    finally:
        f.close()


@contextlib.contextmanager
def file_lock(path: PathLike, waiting: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the context, waiting for another process that
    holds it (``waiting`` is told so first)."""
    path = Path(path)
    with _flock(path, wait=False) as f:
        if f is not None:
            yield
            return
    if waiting:
        waiting(f"waiting for another process that holds {path}")
    with _flock(path, wait=True):
        yield


class FolderBusyError(OSError):
    """A run folder is being written by another live process."""


def user_path(path: PathLike) -> Path:
    """A path as given by a user, read alike by the API and the command line: ``~`` is the
    home folder; a relative path (``..`` included) is relative to the working folder;
    ``$VARS`` are not expanded (the shell expands them on a command line, not in a config)."""
    return Path(path).expanduser()


def check_folder(path: PathLike, what: str = "output folder") -> Path:
    """``path`` as a folder to write into; ``ValueError`` naming ``what`` when it is empty,
    an existing file, or lies under a file."""
    if not str(path).strip():
        raise ValueError(f"{what} is empty: give a folder path")
    path = user_path(path)
    for p in (path, *path.parents):
        if p.is_dir():
            break
        if p.exists() or p.is_symlink():
            where = "is a file" if p == path else f"lies under the file {p}"
            raise ValueError(f"{what} {str(path)!r} {where}: give a folder path")
    return path


def check_folder_name(name: str, what: str) -> str:
    """``name`` when it is one folder name (``parent / name`` then lies inside ``parent``);
    ``ValueError`` naming ``what`` when it is empty, ``.``, ``..``, an absolute path or holds a
    ``/`` (it would write outside the output folder)."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"{what}: a name that becomes a folder must be one folder name inside "
                         f"the output folder (not empty, '.', '..', an absolute path or with a "
                         f"'/'), got {name!r}: rename it")
    return name


@contextlib.contextmanager
def folder_owner(folder: PathLike) -> Iterator[Path]:
    """Own ``folder`` (created if needed) for the context through ``folder/run.lock``, which
    names the holder (pid, host, start time); a lock left by a dead process is taken over.

    :raises FolderBusyError: another live process holds it, named.
    """
    folder = check_folder(folder, "run folder")
    lock = folder / LOCK_NAME
    with _flock(lock, wait=False) as f:
        if f is None:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}
            raise FolderBusyError(
                f"{folder} is being written by another process (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('since', '?')}): wait for it to "
                f"finish or stop it, or write to another output folder"
            )
        f.seek(0)
        f.truncate()
        f.write(json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                                since=time.strftime("%Y-%m-%d %H:%M:%S"))))
        f.flush()
        try:
            yield folder
        finally:
            lock.unlink(missing_ok=True)
