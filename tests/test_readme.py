"""The README's examples run, its links resolve, and what it names exists.

Every ```python block of README.md and docs/*.md starts with ``# example: NAME``; :data:`EXAMPLES`
lists the expected names per file, so a block removed, added or renamed without this list
fails here. Each block runs in a fresh interpreter (the project first on ``PYTHONPATH``, a
temporary working folder, HOME and cache) at the reduced sizes of the switch the README
documents, ``AVALANCHE_CTS_SMOKE=1``, and its output is checked for what the README says it
prints. The ``avalanche-cts ... --help`` lines of its bash blocks run too, every command-line
option it names exists, every relative link (file and anchor) and every project path it names
resolves, and the software citation carries the package's version.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = {"README.md": ["quickstart", "vqa"]}
"""The named Python blocks of each document, in order (documents not listed have none)."""
SMOKE = {"AVALANCHE_CTS_SMOKE": "1"}
"""The README's documented switch to tiny sizes."""
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
NEEDS_DATA = {"quickstart": DEBIAN_FMNIST}
"""Examples that read installed data (``make setup`` installs it), skipped with a reason without."""
NOT_OURS = {"--nproc_per_node"}
"""Options the README passes to other programs (torchrun)."""
PROJECT_DIRS = ("avalanche_cts", "experiments", "docs", "notebooks", "tests")
TIMEOUT_S = 600


# ------------------------------------------------------------------ reading the documents
def fenced_blocks(text: str):
    """``(language, body)`` of each fenced code block of a Markdown text, in order."""
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", text, re.S | re.M)]


def prose(text: str) -> str:
    """``text`` without its fenced code blocks."""
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.S | re.M)


def example_name(body: str) -> str:
    """The ``NAME`` of a block's first line ``# example: NAME`` (empty without one)."""
    m = re.match(r"# example: ([\w-]+)\s*\n", body)
    return m.group(1) if m else ""


def python_examples(doc: Path):
    """``[(name, code)]`` of the Python blocks of ``doc``."""
    return [(example_name(body), body) for lang, body in fenced_blocks(doc.read_text())
            if lang == "python"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set:
    """Anchors of the headings of ``doc`` (a repeated heading gets ``-1``, ``-2``, ...)."""
    seen, out = {}, set()
    for line in prose(doc.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def relative_links(doc: Path):
    """Targets of the Markdown links and images of ``doc`` that are not URLs."""
    targets = re.findall(r"\]\(([^)\s]+)\)", prose(doc.read_text()))
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


# ------------------------------------------------------------------ running the examples
def _run_examples(tmp: Path):
    """Start every named example of every document at once; ``{name: (rc, out, err)}``."""
    jobs = {}
    for doc in DOCS:
        for name, code in python_examples(doc):
            if name in NEEDS_DATA and not NEEDS_DATA[name].is_dir():
                continue
            work = tmp / name
            (work / "home").mkdir(parents=True)
            env = dict(os.environ, **SMOKE, HOME=str(work / "home"), OMP_NUM_THREADS="1",
                       AVALANCHE_CTS_CACHE=str(work / "cache"),
                       PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
            jobs[name] = subprocess.Popen([sys.executable, "-c", code], cwd=work, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for name, proc in jobs.items():
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += f"\n(killed after {TIMEOUT_S} s)"
        results[name] = (proc.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    return _run_examples(tmp_path_factory.mktemp("examples"))


def _progress(out: str, pattern: str, steps: int):
    """The numbers of the ``steps`` progress lines matching ``pattern`` (1, 2, ... in order)."""
    rows = [tuple(float(g) for g in m.groups()) for m in re.finditer(pattern, out)]
    assert [int(r[0]) for r in rows] == list(range(1, steps + 1)), out
    return rows


def _check_memory_rows(rows, out):
    """Accuracies in [0, 1]; a memory that holds records and bytes and never shrinks in total."""
    assert all(0.0 <= r[1] <= 1.0 for r in rows), out
    records, nbytes = [r[2] for r in rows], [r[3] for r in rows]
    assert records[0] > 0 and nbytes[0] > 0, out
    assert records == sorted(records) and nbytes == sorted(nbytes), out
    assert all(b > r for r, b in zip(records, nbytes)), out  # bytes, not a record count


def check_quickstart(out: str):
    rows = _progress(out, r"after experience (\d+): accuracy (\d\.\d{3}) on all test images, "
                          r"memory (\d+) records in (\d+) bytes", 5)
    _check_memory_rows(rows, out)


def check_vqa(out: str):
    rows = _progress(out, r"after task (\d+): exact match on all test questions (\d\.\d{3}), "
                          r"memory (\d+) records in (\d+) bytes", 3)
    _check_memory_rows(rows, out)


CHECKS = {"quickstart": check_quickstart, "vqa": check_vqa}


# ------------------------------------------------------------------ the tests
@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_python_blocks_are_the_listed_examples(doc):
    names = [name for name, _ in python_examples(doc)]
    assert "" not in names, (f"{doc.name}: every ```python block starts with "
                             f"'# example: NAME' (found {names})")
    assert names == EXAMPLES.get(doc.name, []), (
        f"{doc.name} has the examples {names}, tests/test_readme.py expects "
        f"{EXAMPLES.get(doc.name, [])}: update EXAMPLES and CHECKS with the README")
    assert set(names) <= set(CHECKS), f"no output check for {sorted(set(names) - set(CHECKS))}"


@pytest.mark.parametrize("name", [n for names in EXAMPLES.values() for n in names])
def test_example_runs_and_prints_what_the_readme_says(name, example_runs):
    assert name in example_runs or name in NEEDS_DATA, f"no example {name!r} in the documents"
    if name not in example_runs:
        pytest.skip(f"{name} reads {NEEDS_DATA[name]} (Debian's dataset-fashion-mnist, "
                    f"installed by make setup as root), which is absent")
    rc, out, err = example_runs[name]
    assert rc == 0, f"example {name!r} failed:\n{out}\n{err[-4000:]}"
    CHECKS[name](out)


def test_planted_output_fails_the_checks():
    """A memory that stays empty, or a line missing, does not pass the output checks."""
    good = "".join(f"after experience {i}: accuracy 0.500 on all test images, memory {2 * i} "
                   f"records in {400 * i} bytes\n" for i in range(1, 6))
    check_quickstart(good)
    for bad in (good.replace("memory 2 records in 400", "memory 0 records in 0"),
                good.replace("after experience 3", "after experience 7"),
                good.replace("in 2000 bytes", "in 10 bytes")):
        with pytest.raises(AssertionError):
            check_quickstart(bad)


def _cli_help_lines():
    """``avalanche-cts ... --help`` lines of the README's bash blocks, as argument lists."""
    lines = [line for lang, body in fenced_blocks(README.read_text()) if lang == "bash"
             for line in body.splitlines()]
    return [shlex.split(line, comments=True)[1:] for line in lines
            if line.startswith("avalanche-cts ") and "--help" in shlex.split(line, comments=True)]


def test_cli_help_lines_run():
    argvs = _cli_help_lines()
    assert ["--help"] in argvs, "the README shows `avalanche-cts --help`"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for argv in argvs:
        res = subprocess.run([sys.executable, "-m", "avalanche_cts.harness.cli", *argv], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.startswith("usage: avalanche-cts"), \
            (argv, res.stdout, res.stderr)


def _cli_options():
    """Every option string of ``avalanche-cts`` and its commands."""
    from avalanche_cts.harness.cli import build_parser

    parsers, options = [build_parser()], set()
    while parsers:
        p = parsers.pop()
        for action in p._actions:
            options.update(action.option_strings)
            if isinstance(action.choices, dict) and all(
                    isinstance(c, argparse.ArgumentParser) for c in action.choices.values()):
                parsers.extend(action.choices.values())
    return options


def test_options_named_in_the_readme_exist():
    named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", README.read_text()))
    missing = sorted(named - _cli_options() - NOT_OURS)
    assert not missing, f"the README names options avalanche-cts does not have: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_relative_links_resolve(doc):
    broken = []
    for target in relative_links(doc):
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{doc.name}: broken links: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_project_paths_named_exist(doc):
    """Paths such as `experiments/results/demo/` or `tests/test_layout.py` (also in code blocks)."""
    pattern = r"(?<![\w/.-])((?:%s)/[\w./-]*)" % "|".join(PROJECT_DIRS)
    named = {p.rstrip(".") for p in re.findall(pattern, doc.read_text())}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_link_checks_catch_a_planted_break(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n[ok](#top) [file](b.md#sub)\n")
    (tmp_path / "b.md").write_text("# B\n\n## Sub\n")
    assert relative_links(tmp_path / "a.md") == ["#top", "b.md#sub"]
    assert {"sub", "b"} == anchors(tmp_path / "b.md")
    assert slug("The demo (`make demo`)") == "the-demo-make-demo"
    assert slug("Cluttered Fashion-MNIST (the paper's regime)") == \
        "cluttered-fashion-mnist-the-papers-regime"


def result_files_text(doc: Path) -> str:
    """The text of every result file (md, txt, json, csv) in the folders ``doc`` links to, or
    beside the files it links to, with runs of blanks made single."""
    folders = set()
    for target in relative_links(doc):
        path = (doc.parent / target.partition("#")[0]).resolve()
        folders.add(path if path.is_dir() else path.parent)
    files = {f for d in folders if d != doc.parent.resolve() and ROOT in d.parents
             for f in d.rglob("*") if f.suffix in (".md", ".txt", ".json", ".csv")}
    return re.sub(r"[ \t]+", " ", "\n".join(f.read_text(errors="replace") for f in sorted(files)))


def untraced_figures(doc: Path):
    """Table figures (``m ± s``) and lines of plain code blocks of ``doc`` found in no result file."""
    files = result_files_text(doc)
    rows = [line for line in prose(doc.read_text()).splitlines() if line.startswith("|")]
    figures = {f for row in rows for f in re.findall(r"[-+]?\d+\.\d+ ± \d+\.\d+", row)}
    lines = {re.sub(r"[ \t]+", " ", line) for lang, body in fenced_blocks(doc.read_text())
             if lang == "" for line in body.splitlines() if line.strip()}
    return sorted(f for f in figures | lines if f not in files)


def test_result_tables_come_from_result_files():
    doc = ROOT / "docs" / "results.md"
    assert not untraced_figures(doc), ("docs/results.md shows figures that no result file "
                                       f"holds: {untraced_figures(doc)}")


def test_an_invented_figure_is_caught(tmp_path):
    doc = ROOT / "docs" / "results.md"
    planted = tmp_path / "docs" / "results.md"
    planted.parent.mkdir()
    text = doc.read_text().replace("**39.2 ± 7.2**", "**41.2 ± 7.2**", 1)
    text = text.replace("](../", f"]({ROOT}/")  # the same result files, from the copy
    assert "41.2 ± 7.2" in text
    planted.write_text(text)
    assert "41.2 ± 7.2" in untraced_figures(planted)


def composition_table(text: str):
    """``{strategy: "works" | "refused"}`` from the README's composition table."""
    section = text.split("## Which Avalanche strategies it composes with", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in re.findall(r"^\| (`.*?) \| (\w+)", section, re.M):
        for name in re.findall(r"`(\w+)`", row[0]):
            table[name] = row[1]
    return table


def test_composition_table_is_what_test_composition_runs():
    import importlib.util

    path = ROOT / "tests" / "strategies" / "test_composition.py"
    spec = importlib.util.spec_from_file_location("readme_composition", path)
    composition = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(composition)
    KWARGS, WORKS = composition.KWARGS, composition.WORKS

    table = composition_table(README.read_text())
    assert {n for n, v in table.items() if v == "works"} == set(WORKS)
    assert {n for n, v in table.items() if v == "refused"} == set(KWARGS) - set(WORKS)


def resolve(base, dotted: str):
    """The object at ``base.dotted`` (attributes or submodules), or ``None``."""
    import importlib

    obj = base
    for part in dotted.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(f"{obj.__name__}.{part}")
            except (ImportError, AttributeError):
                return None
    return obj


def api_table_rows(text: str):
    """The backticked names of each row of the README's API table."""
    section = text.split("## The API and the folders", 1)[1].split("\n\n", 2)[1]
    return [re.findall(r"`([\w.]+)`", row.split("|")[2]) for row in section.splitlines()[2:]]


def test_api_names_in_the_readme_resolve():
    """Each name of a row resolves in the package or in a module the row names."""
    import avalanche_cts

    rows = api_table_rows(README.read_text())
    assert len(rows) >= 5 and all(rows), rows
    unresolved = []
    for names in rows:
        dotted = [n.split(".")[1:] for n in names if n.startswith("avalanche_cts.")]
        bases = [avalanche_cts] + [resolve(avalanche_cts, ".".join(parts[:i]))
                                   for parts in dotted for i in range(1, len(parts) + 1)]
        for name in names:
            rel = name.split(".", 1)[1] if name.startswith("avalanche_cts.") else name
            if not any(b is not None and resolve(b, rel) is not None for b in bases):
                unresolved.append(name)
    assert not unresolved, f"the README's API table names what the package lacks: {unresolved}"


def test_software_citation_names_the_package_version():
    import avalanche_cts

    m = re.search(r"@software\{[^@]*?version\s*=\s*\{([^}]*)\}", README.read_text(), re.S)
    assert m, "the README cites the software with a version"
    assert m.group(1) == avalanche_cts.__version__


def test_readme_stays_a_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move results to docs/"
    assert lines.index("## What it is") < 30, "what it is, first"
    first = next(i for i, line in enumerate(lines) if line.startswith("```python"))
    assert first < 60, "the Python quick start stays near the top"
