"""Every ```python block in README.md and docs/*.md runs, so that no snippet can rot.

Each block is run on its own in a subprocess, in an empty temporary directory, with a
timeout, and offline: HTTP(S) proxies point at a closed local port, so a snippet that
reaches for the internet fails fast (127.0.0.1 and localhost stay reachable). A block whose
top level defines ``test_*`` functions is run with pytest instead, with the ```toml block
that holds ``[tool.pytest.ini_options]`` (the file's own, else the README's) as the temp
dir's pyproject.toml: the settings the docs tell users to use are the ones tested.

A block that cannot run standalone says so on the line just before its fence, with a
reason: ``<!-- no-run: needs a running Redis -->``. Failures name the file and the line of
the block's fence, and the snippet's own line numbers in tracebacks are the file's.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT

TIMEOUT = 90  # seconds per block: generous, on a loaded 2-core machine
NO_RUN = re.compile(r"^\s*<!--\s*no-run(?P<colon>:)?(?P<reason>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the no-run reason ("" if the comment gave none)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file (any language), with their no-run comments."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None or not fence["lang"]:
            index += 1
            continue
        start, indent = index, len(fence["indent"])
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        index += 1  # the closing fence
        comment = NO_RUN.match(lines[start - 1]) if start > 0 else None
        skip = None
        if comment is not None:
            skip = comment["reason"].strip() if comment["colon"] else ""
        found.append(Block(path, start + 1, fence["lang"], "\n".join(body) + "\n", skip))
    return found


def python_blocks() -> list[Block]:
    return [b for path in doc_files() for b in blocks_of(path) if b.lang in ("python", "py")]


def pytest_config(path: Path) -> str | None:
    """The file's own pytest settings block, else the README's (where users are told)."""
    for source in (path, ROOT / "README.md"):
        for block in blocks_of(source):
            if block.lang == "toml" and "[tool.pytest.ini_options]" in block.code:
                return block.code
    return None


def is_pytest_module(code: str) -> bool:
    tree = ast.parse(code)
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        for node in tree.body
    )


def offline_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("FLASK_APP", "PYTHONPATH"):
        env.pop(key, None)
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env.update(
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
        ALL_PROXY=closed,
        http_proxy=closed,
        https_proxy=closed,
        all_proxy=closed,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_block(block: Block, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Blank lines first, so the snippet's line numbers in a traceback are the file's.
    source = "\n" * block.line + block.code
    stem = re.sub(r"\W", "_", f"{block.path.relative_to(ROOT)}_{block.line}")
    if is_pytest_module(block.code):
        script = tmp_path / f"test_{stem}.py"
        config = pytest_config(block.path)
        if config is not None:
            (tmp_path / "pyproject.toml").write_text(config, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    else:
        script = tmp_path / f"{stem}.py"
        command = [sys.executable, script.name]
    script.write_text(source, encoding="utf-8")
    return subprocess.run(
        command,
        cwd=tmp_path,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


BLOCKS = python_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip == "":
        pytest.fail(f"{block.where}: a no-run comment needs a reason: <!-- no-run: why -->")
    if block.skip is not None:
        pytest.skip(f"{block.where}: no-run: {block.skip}")
    try:
        ast.parse(block.code)
    except SyntaxError as error:
        pytest.fail(f"{block.where}: not valid Python (block line {error.lineno}): {error.msg}")
    try:
        result = run_block(block, tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where}: still running after {TIMEOUT}s (a server? mark it no-run)")
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        pytest.fail(
            f"{block.where}: the block exited {result.returncode}:\n{output}", pytrace=False
        )


# -- the runner itself ---------------------------------------------------------------------


def test_the_runner_reads_fences_lines_and_no_run_comments(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- no-run: needs a GPU -->\n```python\ny\n```\n"
        "<!-- no-run -->\n```python\nz\n```\n```toml\n[tool.pytest.ini_options]\n```\n"
        "* item\n\n  ```python\n  indented = True\n  ```\n",
        encoding="utf-8",
    )
    found = [(b.line, b.lang, b.code, b.skip) for b in blocks_of(doc)]
    assert found == [
        (3, "python", "x = 1\n", None),
        (8, "python", "y\n", "needs a GPU"),
        (12, "python", "z\n", ""),
        (15, "toml", "[tool.pytest.ini_options]\n", None),
        (20, "python", "indented = True\n", None),
    ]
    assert pytest_config(doc) == "[tool.pytest.ini_options]\n"


def test_a_failing_block_names_its_file_and_line(tmp_path: Path) -> None:
    readme = ROOT / "README.md"
    block = Block(readme, 40, "python", "x = 1\nraise ValueError('broken snippet')\n", None)
    result = run_block(block, tmp_path)
    assert result.returncode == 1
    assert "line 42, in <module>" in result.stderr  # fence at 40: the raise is line 42
    assert "broken snippet" in result.stderr
    assert block.where == "README.md:40"


def test_blocks_are_offline(tmp_path: Path) -> None:
    code = (
        "import httpx\n"
        "try:\n"
        "    httpx.get('https://example.org', timeout=10)\n"
        "except httpx.ConnectError as error:\n"
        "    print(error)\n"
    )
    result = run_block(Block(ROOT / "README.md", 1, "python", code, None), tmp_path)
    # Refused by the closed proxy port at once (no DNS look-up, no time-out).
    assert "Connection refused" in result.stdout


#: Modules a user may import; everything else under flask_asgi is internal.
PUBLIC_MODULES = {"testing", "tracing", "cli", "pytest_plugin", "gunicorn"}
#: Names with the prefix that are no module: the ASGI scope extension the test client uses.
NOT_MODULES = {"environ"}
# Not after a quote: "flask_asgi.serving" is an app.extensions key, not a module.
PRIVATE = re.compile(r"(?<![\"\w])flask_asgi\.(ground|protocol|features|serving)\b")


def user_facing_files() -> list[Path]:
    examples = sorted((ROOT / "examples").rglob("*.py"))
    return [*doc_files(), *examples]


def test_docs_and_examples_use_only_the_public_api() -> None:
    """Docs tell users only what ``flask_asgi`` exports (or a public module's names), so a
    re-layout of the internals breaks no user (issue 18)."""
    import flask_asgi

    problems = []
    for path in user_facing_files():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        for match in PRIVATE.finditer(text):
            problems.append(f"{where}: {match.group(0)} is internal")
        for name in re.findall(r"(?<![\"\w/])flask_asgi\.([A-Za-z_]\w*)", text):
            if name not in PUBLIC_MODULES | NOT_MODULES and not hasattr(flask_asgi, name):
                problems.append(f"{where}: flask_asgi.{name} is not exported")
        for names in re.findall(r"from flask_asgi import (\([^)]*\)|[^\n#]+)", text):
            for name in filter(None, (n.strip(" ()\n`") for n in names.split(","))):
                name = name.split(" as ")[0]
                if name not in flask_asgi.__all__:
                    problems.append(f"{where}: 'from flask_asgi import {name}' is not public")
    assert problems == []


def test_the_public_api_check_can_fail(tmp_path: Path) -> None:
    assert PRIVATE.search("from flask_asgi.ground.counters import counters")
    assert not PRIVATE.search("from flask_asgi import counters")
