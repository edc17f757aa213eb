"""The README and docs/ keep working: links, make targets, commands, the services table and endpoints.

No servers: every check reads the Markdown, the Makefile, config.yaml, the services' api.py files and
the command-line parsers. Each checker returns its problems; the last tests feed each one a broken
sample, so a checker that can no longer fail shows.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

import main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKDOWN = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())["default"]
SERVICES = tuple(CONFIG["services"])
OUR_PACKAGES = {"devstack", "load", "services", "shared", "tests"}


# --- Markdown ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    path: Path
    prose: str  # the text outside fenced code blocks
    blocks: list[tuple[str, str]]  # (language, code) of each fenced block

    @classmethod
    def read(cls, path: Path, text: str | None = None) -> Doc:
        text = path.read_text() if text is None else text
        prose, blocks, fence, lang, code = [], [], None, "", []
        for line in text.splitlines():
            opening = re.match(r"^\s*(`{3,}|~{3,})\s*(\S*)", line)
            if fence is None and opening:
                fence, lang, code = opening.group(1), opening.group(2), []
            elif fence is not None and line.strip().startswith(fence):
                blocks.append((lang, "\n".join(code)))
                fence = None
            elif fence is not None:
                code.append(line)
            else:
                prose.append(line)
        return cls(path, "\n".join(prose), blocks)

    def spans(self) -> list[str]:
        """Inline code spans of the prose."""
        return re.findall(r"`([^`\n]+)`", self.prose)

    def shell(self) -> Iterator[str]:
        """The code of the shell blocks and the inline spans."""
        yield from (code for lang, code in self.blocks if lang in ("bash", "sh", "shell"))
        yield from self.spans()


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Doc) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", doc.prose, re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def link_problems(doc: Doc) -> list[str]:
    """Every relative link names an existing file, and its #anchor a heading of that file."""
    problems = []
    prose = re.sub(r"`[^`\n]+`", "", doc.prose)
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.path.parent / file_part).resolve()
        if file_part and not path.exists():
            problems.append(f"{doc.path.name}: link to missing {target}")
            continue
        if not anchor or (file_part and path.suffix != ".md"):
            continue
        if anchor not in anchors(Doc.read(path) if file_part else doc):
            problems.append(f"{doc.path.name}: link to missing heading {target}")
    return problems


# --- Commands ----------------------------------------------------------------------------------

SEPARATORS = set(";&|()<>\n")


def commands(code: str) -> Iterator[list[str]]:
    """The simple commands of some shell code, environment assignments removed."""
    code = strip_comments(code.replace("\\\n", " "))
    lexer = shlex.shlex(code, posix=True, punctuation_chars="();<>|&\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: not shell code
        return
    command: list[str] = []
    for token in [*tokens, "\n"]:
        if set(token) <= SEPARATORS:
            while command and re.match(r"^[A-Za-z_]\w*=", command[0]):
                command.pop(0)
            if command:
                yield command
            command = []
        else:
            command.append(token)


def strip_comments(code: str) -> str:
    """Drop `# ...` comments outside quotes, keeping the line ends."""
    out, quote, skipping = [], "", False
    for i, char in enumerate(code):
        if skipping:
            skipping = char != "\n"
            if char == "\n":
                out.append(char)
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or code[i - 1].isspace()):
            skipping = True
            continue
        out.append(char)
    return "".join(out)


def is_python(word: str) -> bool:
    return re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word) is not None


def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][\w.\- ]*?)\s*:(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parse_only(entry: Callable[[list[str]], Any], argv: list[str]) -> tuple[argparse.ArgumentParser | None, str]:
    """Run ``entry``'s argument parsing on ``argv`` and stop there: (its parser, argparse's complaint)."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        real(self, args, namespace)
        raise _Parsed(self)

    stderr = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), contextlib.redirect_stderr(stderr):
        try:
            entry(argv)
        except _Parsed as parsed:
            return parsed.parser, ""
        except SystemExit:
            return None, (stderr.getvalue().strip().splitlines() or ["exited"])[-1]
    return None, "returned without parsing its arguments"


def command_problems(doc: Doc, targets: set[str]) -> list[str]:
    """`make X` names a Makefile target; `python main.py ...` and `python -m ours ...` parse; modules import."""
    problems = []
    blocks = [code for lang, code in doc.blocks if lang in ("bash", "sh", "shell")]
    for code in [*blocks, *doc.spans()]:
        in_block = code in blocks
        for command in commands(code):
            where = f"{doc.path.name}: `{' '.join(command)}`"
            if command[0] == "make":
                named = [w for w in command[1:] if not w.startswith("-") and "=" not in w]
                problems += [f"{where}: no Makefile target {t!r}" for t in named[:1] if t not in targets]
            elif is_python(command[0]) and command[1:2] == ["main.py"]:
                problems += _argv_problems(where, main.main, command[2:], in_block)
            elif is_python(command[0]) and command[1:2] == ["-m"] and len(command) > 2:
                try:
                    module = importlib.import_module(command[2])
                except ImportError as err:
                    problems.append(f"{where}: cannot import {command[2]}: {err}")
                    continue
                if command[2].split(".")[0] in OUR_PACKAGES and callable(getattr(module, "main", None)):
                    problems += _argv_problems(where, module.main, command[3:], in_block)
    return problems


def _argv_problems(where: str, entry: Callable[[list[str]], Any], argv: list[str], whole: bool) -> list[str]:
    """A command in a code block must parse as shown; in prose (placeholders allowed) its flags must exist."""
    _parser, complaint = parse_only(entry, argv)
    if whole or not complaint:  # prose that parses as written is fine (subcommands included)
        return [f"{where}: {complaint}"] if complaint else []
    parser, complaint = parse_only(entry, [])
    if parser is None:
        return [f"{where}: {complaint}"]
    known = set(parser._option_string_actions)
    return [f"{where}: no option {flag}" for flag in argv if flag.startswith("-") and flag.split("=")[0] not in known]


# --- Services and endpoints ----------------------------------------------------------------------


def table(prose: str, header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header row starts with ``header``, cells stripped."""
    lines = prose.splitlines()
    for i, line in enumerate(lines):
        if line.replace(" ", "").startswith(header.replace(" ", "")):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            return rows
    return []


def services_table_problems(doc: Doc, config: dict[str, Any]) -> list[str]:
    """Each service's port and database are config.yaml's, and each path it names is a config path."""
    rows = table(doc.prose, "| service | port | database |")
    paths = {str(v) for section in config.values() if isinstance(section, dict) for v in section.values()}
    differ = sorted({row[0] for row in rows} ^ set(config["services"]))
    problems = [f"services table: {differ} differ"] if differ else []
    for name, port, database, *rest in rows:
        want = config["services"].get(name, {})
        if port != str(want.get("port")):
            problems.append(f"{name}: port {port} in the README, {want.get('port')} in config.yaml")
        if database.strip("`") != want.get("database"):
            problems.append(f"{name}: database {database} in the README, {want.get('database')} in config.yaml")
        for path in re.findall(r"`(\.local/[^`]+)`", " ".join(rest)):
            if path not in paths:
                problems.append(f"{name}: {path} is not a path in config.yaml")
    return problems


def routes() -> dict[str, set[str]]:
    """``METHOD /path`` of every service's routes ({} for path parameters), and the shared ones under ""."""
    found: dict[str, set[str]] = {"": set()}
    for node in ast.walk(ast.parse((ROOT / "shared" / "web.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_url_rule":
            found[""].add(f"GET {node.args[0].value}")
    for name in SERVICES:
        found[name] = set()
        for node in ast.walk(ast.parse((ROOT / "services" / name / "api.py").read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                continue
            method, first = node.func.attr, node.args[0]
            if method in ("get", "post", "put", "delete", "patch") and str(getattr(first, "value", "")).startswith("/"):
                found[name].add(f"{method.upper()} {first.value}")
    return {name: {re.sub(r"<[^>]+>", "{}", r) for r in rs} for name, rs in found.items()}


def endpoint(text: str) -> str | None:
    match = re.match(r"^(GET|POST|PUT|DELETE|PATCH) (/[^\s?`]*)", text)
    return f"{match.group(1)} {re.sub(r'{[^}]+}', '{}', match.group(2))}" if match else None


def endpoint_problems(readme: Doc, api: Doc, known: dict[str, set[str]]) -> list[str]:
    """Every endpoint in the README's endpoints table, and in docs/api.md's service sections, is a route."""
    problems = []
    for name, cell in table(readme.prose, "| service | endpoints |"):
        for text in re.findall(r"`([^`]+)`", cell):
            if (route := endpoint(text)) and route not in known.get(name, set()):
                problems.append(f"README: {name} has no route {text}")
    section = ""
    for line in api.prose.splitlines():
        heading = re.match(r"^## (\w+)(?: \((\d+)\))?", line)
        if heading:
            section = heading.group(1).lower()
            if heading.group(2) and heading.group(2) != str(CONFIG["services"].get(section, {}).get("port")):
                problems.append(f"api.md: {section} is not on port {heading.group(2)}")
            continue
        for text in re.findall(r"`([^`]+)`", line):
            route = endpoint(text)
            if route and route not in known.get(section, set()) | known[""]:
                problems.append(f"api.md: {section} has no route {text}")
    return problems


# --- The checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_an_existing_file_and_heading(path: Path) -> None:
    assert link_problems(Doc.read(path)) == []


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_names_a_make_target_or_parses_and_imports(path: Path) -> None:
    assert command_problems(Doc.read(path), make_targets()) == []


def test_the_readme_shows_the_two_commands_and_the_six_services() -> None:
    readme = Doc.read(README)
    shown = [c for code in readme.shell() for c in commands(code)]
    assert ["make", "run"] in shown and ["make", "test"] in shown
    assert len(table(readme.prose, "| service | port | database |")) == len(SERVICES)


def test_the_services_table_matches_config_yaml() -> None:
    assert services_table_problems(Doc.read(README), CONFIG) == []


def test_every_endpoint_documented_is_a_route_of_its_service() -> None:
    assert endpoint_problems(Doc.read(README), Doc.read(ROOT / "docs" / "api.md"), routes()) == []


# --- Each checker can fail -------------------------------------------------------------------------


def sample(text: str) -> Doc:
    return Doc.read(README, text)


def test_a_link_to_a_missing_file_or_heading_is_reported() -> None:
    doc = sample("# Top\n[a](docs/nowhere.md) [b](docs/api.md#no-such-heading) [c](#top) [d](#gone)\n")
    assert link_problems(doc) == [
        "README.md: link to missing docs/nowhere.md",
        "README.md: link to missing heading docs/api.md#no-such-heading",
        "README.md: link to missing heading #gone",
    ]


def test_a_make_target_that_does_not_exist_is_reported() -> None:
    doc = sample("```bash\nmake run   # fine\nmake deploy-everything USERS=3\n```\n")
    assert command_problems(doc, make_targets()) == [
        "README.md: `make deploy-everything USERS=3`: no Makefile target 'deploy-everything'"
    ]


def test_a_main_py_flag_that_does_not_exist_is_reported_in_blocks_and_prose() -> None:
    doc = sample("```bash\npython main.py --replicas 3\npython main.py --turbo\n```\nRun `python main.py --fast`.\n")
    problems = command_problems(doc, make_targets())
    assert len(problems) == 2
    assert "python main.py --turbo" in problems[0] and "unrecognized arguments: --turbo" in problems[0]
    assert problems[1] == "README.md: `python main.py --fast`: no option --fast"


def test_a_module_that_does_not_import_or_a_bad_flag_of_ours_is_reported() -> None:
    doc = sample("```bash\npython -m load.no_such_tool\nAPP__X=1 python -m load.bench --orders 5 --speed 9\n```\n")
    problems = command_problems(doc, make_targets())
    assert len(problems) == 2
    assert "cannot import load.no_such_tool" in problems[0]
    assert "unrecognized arguments: --speed 9" in problems[1]


def test_a_port_database_or_path_that_disagrees_with_config_yaml_is_reported() -> None:
    rows = [
        "| service | port | database | does |",
        "|---|---|---|---|",
        "| order | 5012 | `orders` | x |",
        "| payment | 6002 | `payment` | ledger `.local/ledger.jsonl` |",
        *(
            f"| {n} | {CONFIG['services'][n]['port']} | `{CONFIG['services'][n]['database']}` | x |"
            for n in SERVICES[2:]
        ),
    ]
    assert services_table_problems(sample("\n".join(rows)), CONFIG) == [
        "order: port 5012 in the README, 5011 in config.yaml",
        "payment: database `payment` in the README, payments in config.yaml",
        "payment: .local/ledger.jsonl is not a path in config.yaml",
    ]


def test_a_service_missing_from_the_services_table_is_reported() -> None:
    rows = ["| service | port | database |", "|---|---|---|", "| order | 5011 | `orders` |"]
    assert services_table_problems(sample("\n".join(rows)), CONFIG) == [
        "services table: ['inventory', 'monitoring', 'notification', 'orchestrator', 'payment'] differ"
    ]


def test_an_endpoint_that_is_not_a_route_is_reported() -> None:
    readme = sample("| service | endpoints |\n|---|---|\n| order | `POST /orders`, `GET /orders/{id}/invoice` |\n")
    api = sample(
        "## Payment (6002)\n- `GET /payments/{id}`, `GET /health`, `POST /payments/{id}/void`\n## Order (5012)\n"
    )
    assert endpoint_problems(readme, api, routes()) == [
        "README: order has no route GET /orders/{id}/invoice",
        "api.md: payment has no route POST /payments/{id}/void",
        "api.md: order is not on port 5012",
    ]
