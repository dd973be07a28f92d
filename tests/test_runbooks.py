"""Every `abaco ...` command that on-call people and the schedulers run must exist.

The commands come from the runbooks (fenced code blocks and inline code), deploy/README.md, the
systemd units' ExecStart= lines (a template once per instance its timers start) and the cron
file. Each one is parsed by the real command line (the Typer app's click command): the command
path must resolve to a command, every option must exist and get its value, no argument may be
left over. Nothing runs: parsing stops before any command's code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from abaco_cli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "runbooks"
SYSTEMD = ROOT / "deploy" / "systemd"
CRON = ROOT / "deploy" / "cron" / "abaco.cron"
DOCS = [*sorted(RUNBOOKS.glob("*.md")), ROOT / "deploy" / "README.md"]

ALERT_PAGES = {
    "AbacoExportStale": "export-stale.md",
    "AbacoExportFailing": "export-failed.md",
    "AbacoMetricsAbsent": "metrics-absent.md",
    "AbacoHealthcheckCritical": "healthcheck-critical.md",
    "AbacoDiskNearlyFull": "disk-filling.md",
    "AbacoAuditChainBroken": "audit-tampering.md",
    "AbacoUploadPending": "upload-pending.md",
    "AbacoLakeStale": "lake-sync-failed.md",
    "AbacoLakeSyncFailing": "lake-sync-failed.md",
    "AbacoLakeWalRetainedHigh": "lake-wal-growing.md",
    "AbacoLakeSlotLost": "lake-slot-lost.md",
}
SITUATION_PAGES = [
    "database-unreachable.md",
    "restore-after-prune.md",
    "backfill.md",
    "new-vm.md",
    "kpi-json-broken.md",
    "report-failed.md",
    "lake-schema-change.md",
]


# --- a small shell tokenizer: words, operators and redirections, quotes respected -----------

_OPERATORS = ("||", "&&", ";;", "|", ";", "&", "(", ")")
_REDIRECTIONS = (">>", ">&", "<&", "&>", ">", "<")


def shell_tokens(line: str) -> list[tuple[str, str]]:
    """("word", text), ("op", text) or ("redir", text) tokens of one shell line."""
    tokens: list[tuple[str, str]] = []
    word: list[str] = []
    in_word = False
    i = 0

    def flush() -> None:
        nonlocal in_word
        if in_word:
            tokens.append(("word", "".join(word)))
        word.clear()
        in_word = False

    while i < len(line):
        ch = line[i]
        if ch == "'":  # an unclosed quote runs to the end of the line
            end = line.find("'", i + 1)
            end = len(line) if end < 0 else end
            word.append(line[i + 1 : end])
            in_word = True
            i = end + 1
        elif ch == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in '"\\$`':
                    i += 1
                word.append(line[i])
                i += 1
            in_word = True
            i += 1
        elif ch == "\\" and i + 1 < len(line):
            word.append(line[i + 1])
            in_word = True
            i += 2
        elif ch.isspace():
            flush()
            i += 1
        elif ch == "#" and not in_word:
            break
        else:
            redirection = next((r for r in _REDIRECTIONS if line.startswith(r, i)), None)
            if redirection and (not in_word or "".join(word).isdigit()):
                word.clear()  # a file descriptor number belongs to the redirection
                in_word = False
                tokens.append(("redir", redirection))
                i += len(redirection)
                continue
            operator = next((o for o in _OPERATORS if line.startswith(o, i)), None)
            if operator:
                flush()
                tokens.append(("op", operator))
                i += len(operator)
                continue
            word.append(ch)
            in_word = True
            i += 1
    flush()
    return tokens


def simple_commands(line: str) -> list[list[str]]:
    """The words of each simple command of a shell line, redirections removed."""
    commands: list[list[str]] = [[]]
    skip_target = False
    for kind, text in shell_tokens(line):
        if kind == "op":
            commands.append([])
        elif kind == "redir":
            skip_target = True
        elif skip_target:
            skip_target = False
        else:
            commands[-1].append(text)
    return [c for c in commands if c]


# Commands that run another command: how many words of options and operands precede it.
def _skip_wrappers(words: list[str]) -> list[str]:
    i = 0
    while i < len(words):
        word = words[i]
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):  # VAR=value
            i += 1
        elif word == "sudo":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in ("-u", "-g", "-C", "-D", "-h", "-p", "-U") else 1
        elif word in ("nohup", "exec", "time", "command"):
            i += 1
        elif word == "env":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in ("-u", "-C", "-S") else 1
        elif word == "nice" or word == "ionice":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in ("-n", "-c") else 1
        elif word == "timeout":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in ("-k", "-s") else 1
            i += 1  # the duration
        elif word == "flock":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in ("-w", "-E", "--timeout", "--conflict-exit-code") else 1
            i += 1  # the lock file
        elif word == "runuser":
            i += 1
            while i < len(words) and words[i] != "--" and words[i].startswith("-"):
                i += 2 if words[i] in ("-u", "-g", "-G") else 1
            if i < len(words) and words[i] == "--":
                i += 1
        else:
            break
    return words[i:]


def abaco_arguments(line: str) -> list[list[str]]:
    """The arguments of every abaco command in a shell line (the program may be a path)."""
    found: list[list[str]] = []
    if not re.search(r"(^|[\s/])abaco(\s|$)", line):
        return found
    for words in simple_commands(line):
        rest = _skip_wrappers(words)
        if rest and rest[0].rsplit("/", 1)[-1] == "abaco":
            found.append(rest[1:])
    return found


# --- where the commands are --------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    where: str
    line: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: abaco {' '.join(self.args)}"


_FENCE = re.compile(r"^\s*```\s*([A-Za-z0-9_+-]*)")
_SHELL_FENCES = ("", "sh", "bash", "shell", "console")
_INLINE = re.compile(r"`([^`\n]+)`")


def commands_in_markdown(path: Path) -> Iterator[Found]:
    """Commands in shell code blocks (every line) and in inline code spans.

    A fenced block without a language, or tagged sh, bash, shell or console, is shell; in an
    `ini` block (a unit or drop-in) the ExecStart= lines are read; other blocks (text, hcl,
    sql, ...) are not. Continuation lines ending in a backslash are
    joined. In prose, an inline span is a command when it gives abaco at least one argument
    (a bare `abaco` names the program), unless it ends in `...`, a placeholder.
    """
    fence: str | None = None
    pending = ""
    rel = path.relative_to(ROOT).as_posix()
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opening = _FENCE.match(raw)
        if opening:
            fence = None if fence is not None else opening[1]
            pending = ""
            continue
        if fence is not None:
            if fence == "ini":  # a unit or drop-in shown in a page: its Exec lines
                match = re.match(r"^ExecStart(?:Pre|Post)?=[-@:+!]*(.+)$", raw.strip())
                if match:
                    for args in abaco_arguments(match[1]):
                        yield Found(f"{rel}:{number}", match[1], tuple(args))
                continue
            if fence not in _SHELL_FENCES:
                continue
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            line = line.removeprefix("$ ")
            for args in abaco_arguments(line):
                yield Found(f"{rel}:{number}", line, tuple(args))
            continue
        for span in _INLINE.findall(raw):
            if span.rstrip().endswith("..."):
                continue
            for args in abaco_arguments(span):
                if args:
                    yield Found(f"{rel}:{number}", span, tuple(args))


def unit_instances() -> dict[str, list[str]]:
    """Template service -> the instances its timers start (abaco-export@.service -> [dpd, ...])."""
    instances: dict[str, list[str]] = {}
    for timer in sorted(SYSTEMD.glob("*.timer")):
        for line in timer.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^Unit=(.+)@(.+)\.service$", line.strip())
            if match:
                instances.setdefault(f"{match[1]}@.service", []).append(match[2])
    return instances


def commands_in_units() -> Iterator[Found]:
    instances = unit_instances()
    for unit in sorted(SYSTEMD.glob("*.service")):
        for number, line in enumerate(unit.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.startswith(("ExecStart=", "ExecStartPre=", "ExecStartPost=")):
                continue
            command = line.split("=", 1)[1].lstrip("-@:+!")
            names = instances.get(unit.name, [""]) if "@." in unit.name else [""]
            for instance in names:
                expanded = command.replace("%i", instance).replace("%I", instance)
                for args in abaco_arguments(expanded):
                    where = f"deploy/systemd/{unit.name.replace('@.', f'@{instance}.')}:{number}"
                    yield Found(where, expanded, tuple(args))


def cron_jobs() -> Iterator[tuple[int, list[str], str, str]]:
    """(line number, the 5 schedule fields, user, command) of each job in the cron file."""
    for number, line in enumerate(CRON.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or re.match(r"^[A-Z_]+=", stripped):
            continue
        fields = stripped.split(None, 6)
        yield number, fields[:5], fields[5], fields[6]


def commands_in_cron() -> Iterator[Found]:
    for number, _schedule, _user, command in cron_jobs():
        for args in abaco_arguments(command):
            yield Found(f"deploy/cron/abaco.cron:{number}", command, tuple(args))


def all_commands() -> list[Found]:
    found: list[Found] = []
    for doc in DOCS:
        found.extend(commands_in_markdown(doc))
    found.extend(commands_in_units())
    found.extend(commands_in_cron())
    unique: dict[tuple[str, tuple[str, ...]], Found] = {}
    for item in found:
        unique.setdefault((item.where.rsplit(":", 1)[0], item.args), item)
    return list(unique.values())


# --- parsing against the real command line -----------------------------------------------


def parse_against_cli(args: list[str]) -> str:
    """Resolve ``abaco ARGS`` to a command and parse its options, without running it.

    Returns the command path ("abaco export dpd"). Raises the command line's own usage errors:
    an unknown command or option, a missing option value, a leftover argument, a value of the
    wrong type, a group given without a command.
    """
    root = typer.main.get_command(app)
    ctx = root.make_context("abaco", list(args))
    command = root
    while hasattr(command, "resolve_command"):  # a group: go down one level
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        rest = [*protected, *ctx.args]
        if not rest:
            if getattr(command, "invoke_without_command", False):
                break
            raise ValueError(f"`{ctx.command_path}` needs a command")
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return ctx.command_path


def parses(args: list[str]) -> tuple[bool, str]:
    try:
        return True, parse_against_cli(args)
    except Exception as exc:  # the CLI library's exceptions (vendored click or click)
        if type(exc).__name__ == "Exit" and getattr(exc, "exit_code", 1) == 0:
            return True, "--help/--version"
        return False, f"{type(exc).__name__}: {exc}"


COMMANDS = all_commands()


@pytest.mark.parametrize("found", COMMANDS, ids=str)
def test_command_parses_against_the_real_cli(found: Found) -> None:
    ok, detail = parses(list(found.args))
    assert ok, f"{found.where}: `{found.line}` does not parse: {detail}"


# --- the extraction and the checker themselves ---------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["export", "dpd", "--as-of", "2025-06-30", "--format", "csv,parquet", "--json"],
        ["export", "dpd", "--dry-run", "-f", "json"],
        ["--log-format", "json", "--runtime-dir", "/tmp/rt", "db", "check", "--json"],
        ["db", "seed", "--loans", "300", "--seed", "7", "--through", "2025-06-30"],
        ["config", "show", "--json"],
        ["--version"],
    ],
)
def test_checker_accepts_real_commands(args: list[str]) -> None:
    ok, detail = parses(args)
    assert ok, detail


@pytest.mark.parametrize(
    "args",
    [
        ["export", "dpd", "--bogus"],  # unknown option
        ["export", "dpd", "--as-of"],  # option without its value
        ["db", "nope"],  # unknown command
        ["db", "check", "extra"],  # leftover argument
        ["db", "seed", "--loans", "many"],  # wrong type
        ["export"],  # a group without its command
        ["config"],
        ["--log-format"],
        [],
    ],
)
def test_checker_refuses_wrong_commands(args: list[str]) -> None:
    ok, detail = parses(args)
    assert not ok, f"`abaco {' '.join(args)}` should not parse ({detail})"


def test_tokenizer_handles_cron_lines_sudo_and_redirections() -> None:
    cron = (
        "flock -n -E 75 /run/lock/abaco-prune.lock timeout -k 1m 30m abaco prune "
        '--retention 90d >>/var/log/abaco/prune.log 2>&1 || echo "abaco prune failed (exit $?)"'
    )
    assert abaco_arguments(cron) == [["prune", "--retention", "90d"]]
    line = (
        "sudo -u abaco abaco --log-format json export dpd --from 2025-01-01 --json >/tmp/x 2>/tmp/y"
    )
    assert abaco_arguments(line) == [
        ["--log-format", "json", "export", "dpd", "--from", "2025-01-01", "--json"]
    ]
    assert abaco_arguments("/opt/abaco/venv/bin/abaco export kpi") == [["export", "kpi"]]
    assert abaco_arguments("ABACO_LOG_FORMAT=json abaco healthcheck --json | jq .") == [
        ["healthcheck", "--json"]
    ]
    assert abaco_arguments("sudo chown -R abaco:abaco /var/lib/abaco") == []
    assert abaco_arguments("useradd --system abaco") == []
    assert abaco_arguments("echo 'abaco export dpd'") == []
    assert abaco_arguments("abaco prune --keep-last 24 # comment") == [
        ["prune", "--keep-last", "24"]
    ]


def test_every_source_yields_commands() -> None:
    """The extraction found something everywhere it should (an empty result proves nothing)."""
    wheres = {found.where.rsplit(":", 1)[0] for found in COMMANDS}
    for page in [*ALERT_PAGES.values(), *SITUATION_PAGES]:
        assert f"runbooks/{page}" in wheres, f"no abaco command found in runbooks/{page}"
    for instance in ("dpd", "kpi", "pricing", "analytics"):
        assert f"deploy/systemd/abaco-export@{instance}.service" in wheres
    assert "deploy/systemd/abaco-prune.service" in wheres
    assert "deploy/systemd/abaco-healthcheck.service" in wheres
    assert "deploy/systemd/abaco-upload.service" in wheres
    assert "deploy/systemd/abaco-report.service" in wheres
    assert "deploy/systemd/abaco-lake-sync.service" in wheres
    jobs = list(cron_jobs())
    assert jobs
    cron_commands = [f for f in COMMANDS if f.where.startswith("deploy/cron/")]
    assert len(cron_commands) == len(jobs), "every cron job runs exactly one abaco command"


# --- the runbooks' shape ------------------------------------------------------------------


def test_every_alert_and_situation_has_its_page() -> None:
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    for alert, page in ALERT_PAGES.items():
        assert (RUNBOOKS / page).is_file(), f"missing runbooks/{page}"
        row = next((line for line in index.splitlines() if f"| {alert} |" in line), "")
        assert f"({page})" in row, f"runbooks/README.md does not map {alert} to {page}"
        assert alert in (RUNBOOKS / page).read_text(encoding="utf-8")
    for page in SITUATION_PAGES:
        assert (RUNBOOKS / page).is_file(), f"missing runbooks/{page}"
        assert f"({page})" in index, f"runbooks/README.md does not list {page}"


@pytest.mark.parametrize("page", [*ALERT_PAGES.values(), *SITUATION_PAGES])
def test_page_has_every_part(page: str) -> None:
    text = (RUNBOOKS / page).read_text(encoding="utf-8")
    assert "**Alert:**" in text or "**Leads here:**" in text, "which alert leads here?"
    for section in ("## Check", "## Fix", "## Confirm", "## Tell"):
        assert section in text, f"runbooks/{page} has no '{section}' section"


def test_links_between_pages_resolve() -> None:
    for page in RUNBOOKS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+\.md)\)", page.read_text(encoding="utf-8")):
            assert (RUNBOOKS / target).is_file(), f"{page.name} links to missing {target}"


def test_every_alert_rule_links_to_its_page() -> None:
    """monitoring/'s alert rules name their page in runbook_url; each must be this page."""
    rules = sorted((ROOT / "monitoring").rglob("*.yml"))
    rules = [r for r in rules if "tests" not in r.relative_to(ROOT).parts]
    links: dict[str, str] = {}
    for path in rules:
        alert = None
        for line in path.read_text(encoding="utf-8").splitlines():
            named = re.match(r"^\s*-\s*alert:\s*(\S+)", line)
            if named:
                alert = named[1]
            url = re.match(r"""^\s*runbook_url:\s*["']?([^"'\s]+)""", line)
            if url and alert:
                links[alert] = url[1]
    assert set(links) >= set(ALERT_PAGES), f"alert rules without a runbook_url: {links}"
    for alert, url in links.items():
        assert url.startswith("runbooks/") or "/runbooks/" in url, f"{alert}: {url}"
        assert (RUNBOOKS / Path(url).name).is_file(), f"{alert}: no page {url}"
        if alert in ALERT_PAGES:
            assert Path(url).name == ALERT_PAGES[alert], f"{alert}: {url}"
