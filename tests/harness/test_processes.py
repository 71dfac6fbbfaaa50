"""Concurrent processes: a shared cache made once by processes starting together, a run folder
written by one process at a time, and workers that end with the main process."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _children(pid: int):
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(condition, timeout: float, step: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


UNPACK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from avalanche_cts.benchmarks.fmnist import load_fashion_mnist
    root, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    x, y, xt, yt = load_fashion_mnist(root)
    print(int(x.sum()), int(y.sum()), int(xt.sum()))
""")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_processes_unpacking_into_an_empty_cache_at_once_all_succeed(fake_fmnist, tmp_path):
    script = tmp_path / "unpack.py"
    script.write_text(UNPACK)
    env = dict(ENV, AVALANCHE_CTS_CACHE=str(tmp_path / "cache"))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(fake_fmnist),
                               str(tmp_path / f"ready{i}"), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    assert _wait(lambda: all((tmp_path / f"ready{i}").exists() for i in range(4)), 600)
    go.touch()  # all four unpack the same .gz files into the same cache now
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e[-1500:] for _, e in outs]
    assert len({o for o, _ in outs}) == 1
    unpacked = list((tmp_path / "cache" / "fashion-mnist").rglob("*"))
    assert any(p.name == "train-images-idx3-ubyte" for p in unpacked)
    assert not [p for p in unpacked if p.name.endswith(".tmp")]  # no temporary file left


HOLD = textwrap.dedent("""
    import sys, time
    from avalanche_cts._files import folder_owner
    with folder_owner(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_run_folder_has_one_writer_and_a_dead_writers_lock_is_taken_over(tmp_path):
    from avalanche_cts._files import FolderBusyError, folder_owner

    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"another process \\(pid {holder.pid} on "):
            with folder_owner(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / "run.lock").is_file()  # left behind by the killed writer
    with folder_owner(folder):
        assert json.loads((folder / "run.lock").read_text())["pid"] == os.getpid()
    assert not (folder / "run.lock").exists()


GRID = """
name: tiny
benchmark: {name: synthetic, n_experiences: 3, n_classes: 6, train_per_class: 16,
            test_per_class: 4, image_size: 8, channels: 1}
run: {model: vit_digits_micro, method: core_tokenset, budget: 0.2, epochs: 4, batch_size: 16,
      lr: 0.01, replay_mode: sparse}
grid: {seed: [0, 1]}
"""


def _grid(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avalanche_cts.harness.cli", "run",
                             "--config", str(config), "--out", str(out), "--jobs", "2"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(out: Path):
    return {p.parent.name: (json.loads(p.read_text())["acc_matrix"],
                            json.loads(p.read_text())["memory_bytes"])
            for p in sorted(out.glob("*/result.json"))}


def _interrupt(config: Path, out: Path, sig: int, when) -> subprocess.Popen:
    """Start the grid, wait until both workers run and ``when()`` holds, send ``sig`` to the
    main process only; return the process (ended) after checking no worker outlives it."""
    main = _grid(config, out)
    # generous limits: a loaded machine stretches the start and the first experience; the
    # waits end as soon as the condition holds
    assert _wait(lambda: len(_children(main.pid)) >= 3 or main.poll() is not None, 600)
    workers = _children(main.pid)  # two workers and the resource tracker
    assert _wait(lambda: when() or main.poll() is not None, 600)
    assert main.poll() is None, "the grid ended before it could be interrupted: " + \
        main.communicate()[1][-2000:]
    os.kill(main.pid, sig)
    main.communicate(timeout=60)
    assert _wait(lambda: not any(_alive(p) for p in workers), 5), \
        [p for p in workers if _alive(p)]
    return main


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("sig, code, started", [
    (signal.SIGTERM, 143, "state.pt"),          # after a run has saved its first experience
    (signal.SIGKILL, -signal.SIGKILL, "run.lock"),  # as soon as a run owns its folder
])
def test_workers_end_with_the_main_process_and_a_rerun_resumes_to_the_same_results(
        tmp_path, sig, code, started):
    from avalanche_cts.harness.execute import execute_cells
    from avalanche_cts.harness.grid import expand_cells, load_config

    config = tmp_path / "tiny.yaml"
    config.write_text(GRID)
    execute_cells(expand_cells(load_config(config)), tmp_path / "whole", log=None)  # here, 1 job
    expected = _results(tmp_path / "whole")
    assert len(expected) == 2

    cut = tmp_path / "cut"  # each interruption starts from an empty folder: a whole grid to cut
    stopped = _interrupt(config, cut, sig, lambda: any(cut.glob(f"*/{started}")))
    assert stopped.returncode == code
    partial = _results(cut)  # a run may finish between the check and the signal on a busy machine
    assert len(partial) < len(expected) and all(expected[k] == v for k, v in partial.items())
    rerun = _grid(config, cut)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()[-2000:]
    assert _results(cut) == expected
    assert not list(cut.glob("*/run.lock"))
    assert all((cut / key / "accuracy.png").is_file() for key in expected)

    (tmp_path / "whole" / "seed=0" / "run.lock").write_text('{"pid": 1}')  # a dead run's lock
    execute_cells(expand_cells(load_config(config)), tmp_path / "whole", log=None)  # nothing to run
    assert _results(tmp_path / "whole") == expected
    assert not list((tmp_path / "whole").glob("*/run.lock"))
