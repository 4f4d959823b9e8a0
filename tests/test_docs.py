"""Every snippet of README.md and docs/*.md runs, so the documentation cannot rot.

The rule, per Markdown file (one test each):

* ```` ```python ```` blocks run in order, in one namespace, in a fresh temporary working directory,
  after ``torch.manual_seed(0)``.  Nothing is downloaded (``VERTEBRA_OFFLINE=1``, an empty
  ``VERTEBRA_HOME``): a page that loads weights writes the file first.
* ```` ```bash ```` blocks share that directory; each command line runs as ``python -m vertebra ...``
  on this checkout and must exit 0.  Only quick ``vertebra`` commands (:data:`QUICK`) may appear in a
  runnable block; any other command fails the test, so a long one cannot sit there unnoticed.
* A block that must not run says why in its fence: ```` ```bash no-run=REASON ````, where ``REASON``
  is a key of :data:`NO_RUN` below.  An unknown or missing reason fails the test.
* Other languages (toml, yaml, text) are data shown to the reader, not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Why a block is not run.  A fence ``no-run=KEY`` must name one of these.
NO_RUN = {
    "setup": "installs packages into the running environment (.ci/run executes the README's set-up commands)",
    "train": "trains a model (minutes on a CPU); tests/engine runs the same loop at tiny sizes",
    "quickstart": "the full quickstart trains two models (minutes); tests/engine covers `--quick`",
    "ddp": "starts several processes with torchrun; tests/engine covers DDP",
    "bench": "runs the benchmark suite (minutes to an hour); tests/test_bench.py covers the tooling",
    "plugin-package": "files of a separate installable package; examples/vertebra-plugin-example is tested",
    "export": "exports a model (tens of seconds per format on a CPU); tests/deploy covers every head and format",
    "quantize": "calibrates and quantizes a model (tens of seconds); tests/quantization covers the CLI and API",
    "fails-on-purpose": "shows an error exit (status 2); tests/test_cli.py checks the error exits",
}

#: The ``vertebra`` subcommands quick enough to run from the docs (seconds, no training; ``predict``
#: on the tiny model a page writes first).
QUICK = {"list", "info", "plugins", "data", "predict"}

_FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int          # 1-based line of the opening fence
    language: str
    options: dict[str, str]
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    found, lines = [], path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match or not match["info"].strip():
            index += 1
            continue
        language, *words = match["info"].split()
        options = dict(word.partition("=")[::2] for word in words)
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.name}:{index + 1}: unclosed code fence")
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in lines[index + 1:end])
        found.append(Block(path, index + 1, language, options, code))
        index = end + 1
    return found


def _skip_reason(block: Block) -> str | None:
    if "no-run" not in block.options:
        return None
    reason = block.options["no-run"]
    if reason not in NO_RUN:
        raise AssertionError(f"{block.where}: 'no-run={reason}' names no reason of tests/test_docs.py NO_RUN "
                             f"({', '.join(sorted(NO_RUN))}); add one there or make the block run")
    return NO_RUN[reason]


def _commands(block: Block) -> list[list[str]]:
    """The command lines of a bash block, comments and continuation lines resolved."""
    text = block.code.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def _run_bash(block: Block, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "VERTEBRA_OFFLINE": "1"}
    for words in _commands(block):
        if words[0] != "vertebra" or len(words) < 2 or (words[1] not in QUICK and "--help" not in words):
            raise AssertionError(f"{block.where}: {' '.join(words)!r} is not a quick vertebra command "
                                 f"({', '.join(sorted(QUICK))} or --help); put it in a "
                                 f"```bash no-run=REASON block (reasons: tests/test_docs.py NO_RUN)")
        done = subprocess.run([sys.executable, "-m", "vertebra", *words[1:]], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise AssertionError(f"{block.where}: {' '.join(words)!r} exited {done.returncode}\n"
                                 f"{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _run_python(block: Block, namespace: dict) -> None:
    name = f"{block.where} (python block)"
    try:
        exec(compile(block.code, name, "exec"), namespace)
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == name]
        line = block.code.splitlines()[frames[-1].lineno - 1].strip() if frames else "?"
        raise AssertionError(f"{block.where}: the python block raised {type(error).__name__}: {error}\n"
                             f"  at its line {frames[-1].lineno if frames else '?'}: {line}") from error


def run_page(path: Path, cwd: Path) -> list[str]:
    """Run every block of ``path`` (see the module docstring); the skipped blocks and their reasons."""
    torch.manual_seed(0)
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    skipped = []
    for block in blocks(path):
        reason = _skip_reason(block)
        if reason is not None:
            skipped.append(f"{block.where}: {reason}")
        elif block.language == "python":
            _run_python(block, namespace)
        elif block.language == "bash":
            _run_bash(block, cwd)
    return skipped


@pytest.fixture
def offline_tmp(tmp_path, monkeypatch):
    """A fresh working directory, no downloads and an empty weights cache (for the bash commands too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VERTEBRA_OFFLINE", "1")
    monkeypatch.setenv("VERTEBRA_HOME", str(tmp_path / "vertebra-home"))
    return tmp_path


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_snippet_runs(path, offline_tmp):
    run_page(path, offline_tmp)


def test_docs_pages_exist_and_the_readme_links_them():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert {"backbones.md", "heads.md", "training.md", "weights.md", "plugins.md", "deployment.md",
            "performance.md", "errors.md"} <= set(pages)
    for name in pages:
        assert f"(docs/{name})" in readme, f"README.md has no link to docs/{name}"


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_point_at_files(path):
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (path.parent / target).exists(), f"{path.name}: link to {target} points at nothing"


def test_readme_keeps_the_two_set_up_commands():
    """CI (.ci/run) runs exactly these; the front page must show them verbatim."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "pip install -e . && vertebra quickstart" in readme
    assert 'pip install -e ".[test]" && pytest -n 2' in readme
    assert "python -m pytest -n 2\n" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


# -- the runner itself must be able to fail ---------------------------------------------------------

def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


def test_a_broken_python_snippet_fails_with_its_line(offline_tmp):
    page = _page(offline_tmp, "# t\n\n```python\nx = 1\n```\n\ntext\n\n```python\nassert x == 2, 'rotted'\n```\n")
    with pytest.raises(AssertionError, match=r"page.md:9: the python block raised AssertionError: rotted"):
        run_page(page, offline_tmp)


def test_blocks_of_a_page_share_one_namespace_and_folder(offline_tmp):
    page = _page(offline_tmp, "```python\nfrom pathlib import Path\nPath('made.txt').write_text('1')\n"
                              "value = 41\n```\n\n```python\nassert value + 1 == 42 and Path('made.txt').is_file()\n```\n")
    assert run_page(page, offline_tmp) == []


def test_long_and_failing_commands_are_refused(offline_tmp):
    train = _page(offline_tmp, "```bash\nvertebra train configs/train/quickstart_detection.yaml\n```\n")
    with pytest.raises(AssertionError, match="not a quick vertebra command"):
        run_page(train, offline_tmp)
    failing = _page(offline_tmp, "```bash\nvertebra info efficientnet_b33   # a typo\n```\n")
    with pytest.raises(AssertionError, match="exited 2"):
        run_page(failing, offline_tmp)


def test_no_run_needs_a_named_reason(offline_tmp):
    reasoned = _page(offline_tmp, "```bash no-run=train\nvertebra train x.yaml\n```\n")
    assert run_page(reasoned, offline_tmp) == [f"page.md:1: {NO_RUN['train']}"]
    for fence in ("```bash no-run", "```bash no-run=because"):
        with pytest.raises(AssertionError, match="names no reason"):
            run_page(_page(offline_tmp, f"{fence}\nvertebra train x.yaml\n```\n"), offline_tmp)
