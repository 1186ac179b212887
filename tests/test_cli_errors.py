"""How the command line prints and fails: text from documents, ids and error messages are plain text (never Rich
markup); every user error is one line on stderr naming the setting or argument and its value, exit status 2;
runtime failures exit 1; a traceback only with ``--verbose``.

In-process through typer's runner, and, for exit statuses and stderr as a shell sees them, as real subprocesses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ragline.cli import app
from ragline.cli.failures import report
from ragline.cli.shared import tracked
from ragline.config import RaglineConfig
from ragline.errors import ConfigError, RaglineError
from ragline.indexing.locks import FileLocks
from ragline.service.server import check_listenable
from tests.conftest import SAMPLE

REPO = Path(__file__).resolve().parents[1]
MARKUP = "[red]x[/blue]"
"""Looks like Rich markup; printed through markup it raises MarkupError (a closing tag that was never opened)."""
FILE_MARKUP = "[bold]odd[red]"
"""Rich markup a file name can hold (no slash): printed through markup it would vanish into styling."""
TITLE = "[/bold] notes"
STYLED = "[bold red]loud[/bold red]"
NESTED = "[" * 50_000 + "]" * 50_000

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, models_dir: Path, tmp_path: Path) -> Path:
    """A fresh state home; the session's model folder; no Prefect server; no ragline.toml in the working dir."""
    monkeypatch.setenv("RAGLINE_MODEL_CACHE_DIR", str(models_dir))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def hostile_corpus(root: Path) -> Path:
    """A JSONL source whose ids, titles and texts look like Rich markup."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "_id": MARKUP,
            "title": TITLE,
            "text": f"Chunk overlap {MARKUP} repeats text. {STYLED} overlap is :warning: ok.",
        },
        {"_id": "plain", "title": "Plain", "text": "Namespaces partition an index per tenant."},
    ]
    path = root / "notes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def user_error(result: Result, *names: str) -> str:
    """Assert ``result`` is a user error (exit 2, one line on stderr, nothing on stdout) naming ``names``."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "", result.stdout
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# --- plain text everywhere ----------------------------------------------------------------------------------


@pytest.mark.slow  # two ingests and four commands: several seconds
def test_document_text_ids_and_titles_print_literally(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_ANSWER_MIN_SIMILARITY", "-1")  # the hashing embedder: always answer
    home = ["--home", str(cli_env), "-n", "docs"]
    folder = tmp_path / FILE_MARKUP  # the source's name, shown by status
    folder.mkdir()
    (folder / f"{FILE_MARKUP}.txt").write_bytes(b"\xff\xfe not utf-8 \x80")  # quarantined: its name is printed
    (folder / "ok.md").write_text(f"# {TITLE}\n\nOverlap {STYLED} text.\n", encoding="utf-8")
    ingested = runner.invoke(app, ["ingest", str(folder), *home])
    assert ingested.exit_code == 0, ingested.output
    assert f"{FILE_MARKUP} → namespace docs" in ingested.stdout  # the table's title
    assert "quarantined" in ingested.stdout and "%5Bbold%5Dodd%5Bred%5D.txt" in ingested.stdout  # its URI

    assert runner.invoke(app, ["ingest", str(hostile_corpus(tmp_path / "jsonl")), *home]).exit_code == 0
    query = runner.invoke(app, ["query", "chunk overlap repeats", *home, "-k", "3", "--mode", "bm25"])
    assert query.exit_code == 0, query.output
    assert f"notes/{MARKUP}#0" in query.stdout and MARKUP in query.stdout and ":warning:" in query.stdout

    ask = runner.invoke(app, ["ask", "chunk overlap repeats text", *home, "--mode", "bm25"])
    assert ask.exit_code == 0, ask.output
    assert f"{TITLE} · " in ask.stdout and f"notes/{MARKUP}#0" in ask.stdout and STYLED in ask.stdout

    status = runner.invoke(app, ["status", *home])
    assert status.exit_code == 0 and FILE_MARKUP in status.stdout and "committed" in status.stdout

    filtered = runner.invoke(app, ["query", "overlap", *home, "--filter", json.dumps({"title": TITLE})])
    assert filtered.exit_code == 0 and f"notes/{MARKUP}#0" in filtered.stdout


def test_error_messages_print_literally(cli_env: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["ingest", str(tmp_path / STYLED), "--home", str(cli_env)])
    assert STYLED in user_error(missing, "PATH")
    bad_filter = runner.invoke(
        app, ["query", "x", "--home", str(cli_env), "--filter", json.dumps({"a": {"$gt": "[/x]"}})]
    )
    assert "[/x]" in user_error(bad_filter, "--filter", "$gt")


# --- user errors: one line, exit 2 ------------------------------------------------------------------------------


def test_a_home_that_is_a_file_is_one_line(cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("RAGLINE_HOME", str(taken / "home"))
    user_error(runner.invoke(app, ["status"]), "home", f"{taken} is a file, not a directory")
    monkeypatch.setenv("RAGLINE_HOME", "")  # an unset shell variable: not the working directory
    user_error(runner.invoke(app, ["status"]), "home", "is empty")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be made")
def test_a_home_that_cannot_be_created_is_one_line(cli_env: Path) -> None:
    home = "/proc/ragline-home/x"  # mkdir fails there even for root, whom permissions do not stop
    user_error(runner.invoke(app, ["status", "--home", home]), f"cannot create folder {home}")
    user_error(runner.invoke(app, ["ingest", str(SAMPLE), "--home", home, "--no-flow"]), "cannot create folder")


@pytest.mark.parametrize(
    ("setting", "value", "command", "named"),
    [
        ("CHUNK_OVERLAP", "500", ["ingest", "{corpus}"], ["chunk_overlap", "500", "chunk_size", "200"]),
        ("CHUNK_SIZE", "lots", ["ingest", "{corpus}"], ["chunk_size", "lots"]),
        ("NAMESPACE", "../x", ["status"], ["namespace", "../x"]),
        ("LOCK_WAIT_S", "-1", ["reconcile"], ["lock_wait_s", "-1"]),
        ("ANSWER_TOP_K", "0", ["ask", "why?"], ["answer_top_k", "0"]),
        ("ANSWER_MODE", "poem", ["ask", "why?"], ["answer_mode", "poem"]),
        ("EMBEDDER", "magic", ["query", "x"], ["embedder", "magic"]),
        ("EVAL_TOLERANCE", "-1", ["eval"], ["eval_tolerance", "-1"]),
        ("SERVICE_PORT", "99999", ["serve"], ["service_port", "99999"]),
        ("SERVICE_API_KEYS", "{not json", ["serve"], ["service_api_keys"]),
        ("BACKFILL_PARTITION_SIZE", "0", ["backfill", "{corpus}"], ["backfill_partition_size", "0"]),
        ("REFRESH_DEFAULT_TTL", "soon", ["refresh", "{corpus}"], ["refresh_default_ttl", "soon"]),
        ("INDEX_VERSION", "a b", ["status"], ["index_version", "a b"]),
        ("STORE", "s3", ["versions", "list", "docs"], ["store", "s3"]),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    value: str,
    command: list[str],
    named: list[str],
) -> None:
    corpus = hostile_corpus(tmp_path / "corpus")
    monkeypatch.setenv(f"RAGLINE_{setting}", value)
    args = [arg.format(corpus=corpus) for arg in command]
    line = user_error(runner.invoke(app, [*args, "--home", str(cli_env)]), *named)
    assert f"RAGLINE_{setting}" in line


def test_a_bad_ragline_toml_is_one_line(cli_env: Path, tmp_path: Path) -> None:
    (tmp_path / "ragline.toml").write_text("chunk_size = [oops\n", encoding="utf-8")
    user_error(runner.invoke(app, ["status", "--home", str(cli_env)]), "ragline.toml")
    (tmp_path / "ragline.toml").write_text('chunk_size = "big"\n', encoding="utf-8")
    user_error(runner.invoke(app, ["status", "--home", str(cli_env)]), "chunk_size", "big", "ragline.toml")
    (tmp_path / "ragline.toml").write_bytes(b"\xff\xfechunk_size = 100\n")
    user_error(runner.invoke(app, ["status", "--home", str(cli_env)]), "ragline.toml", "not UTF-8")


def test_a_misspelt_ragline_toml_key_is_one_line_with_the_setting_meant(cli_env: Path, tmp_path: Path) -> None:
    (tmp_path / "ragline.toml").write_text("chunk_sise = 100\nbatch_size = 64\nzzz = 1\n", encoding="utf-8")
    user_error(runner.invoke(app, ["status", "--home", str(cli_env)]), "ragline.toml", "chunk_sise, zzz", "chunk_size")
    (tmp_path / "ragline.toml").write_text("RAGLINE_CHUNK_SIZE = 100\n", encoding="utf-8")
    user_error(runner.invoke(app, ["status", "--home", str(cli_env)]), "RAGLINE_CHUNK_SIZE", "mean chunk_size")
    (tmp_path / "ragline.toml").write_text('CHUNK_SIZE = 100\nOpenAI_API_Key = "sk-x"\n', encoding="utf-8")
    assert "unknown setting" not in runner.invoke(app, ["status", "--home", str(cli_env)]).stderr  # any case matches


def test_a_namespace_or_version_nothing_was_indexed_into_is_one_line_naming_those_there_are(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_EMBEDDER", "hashing")
    home = ["--home", str(cli_env)]
    for command in (["query", "flows"], ["ask", "why?"], ["status"], ["reconcile", "--dry-run"], ["reconcile"]):
        user_error(runner.invoke(app, [*command, *home]), "'default'", "ragline ingest")
    corpus = hostile_corpus(tmp_path / "corpus")
    for name in ("docs", "notes"):
        assert runner.invoke(app, ["ingest", str(corpus), "-n", name, *home]).exit_code == 0
    for command in (["query", "flows"], ["ask", "why?"], ["status"], ["reconcile", "--dry-run"]):
        user_error(runner.invoke(app, [*command, "-n", "doc", *home]), "'doc'", "docs, notes")
        assert runner.invoke(app, [*command, "-n", "notes", *home]).exit_code == 0
    user_error(runner.invoke(app, ["versions", "list", "doc", *home]), "'doc' holds no index", "docs, notes")
    assert runner.invoke(app, ["versions", "list", "notes", *home]).exit_code == 0
    status = ["status", "-n", "docs", "--index-version"]
    user_error(runner.invoke(app, [*status, "v2", *home]), "'docs' has no index version 'v2'", "--index-version v2")
    mistyped = ["status", "-n", "doc", "--index-version", "v2", *home]
    user_error(runner.invoke(app, mistyped), "'doc' holds no index", "docs, notes")
    assert runner.invoke(app, ["ingest", str(corpus), "-n", "docs", "--index-version", "v3", *home]).exit_code == 0
    user_error(runner.invoke(app, [*status, "v2", *home]), "'docs' has no index version 'v2'", "(versions: v3)")
    assert runner.invoke(app, [*status, "v3", *home]).exit_code == 0


def test_piped_tables_are_as_wide_as_their_text(cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGLINE_EMBEDDER", "hashing")
    long_id = "handbook-" + "-".join(f"section{n}" for n in range(12))
    corpus = tmp_path / "long.jsonl"
    row = {"_id": long_id, "title": "Flaps", "text": "Flaps lower the stall speed of a wing " * 6}
    corpus.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert runner.invoke(app, ["ingest", str(corpus), "-n", "docs", "--home", str(cli_env)]).exit_code == 0
    shown = runner.invoke(app, ["query", "stall speed", "-n", "docs", "--mode", "bm25", "--home", str(cli_env)])
    assert shown.exit_code == 0 and any(f"{long_id}#0" in line for line in shown.stdout.splitlines()), shown.stdout


def test_serve_on_a_port_in_use_is_one_line_naming_it(cli_env: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(app, ["serve", "--host", "127.0.0.1", "--port", port, "--home", str(cli_env)])
    user_error(result, f"127.0.0.1:{port}", "--port")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["status", "-n", "../x"], ["--namespace", "../x"]),
        (["reconcile", "-n", "a/b"], ["--namespace", "a/b"]),
        (["ingest", "{corpus}", "--index-version", "v 2"], ["--index-version", "v 2"]),
        (["ingest", "{tmp}/nowhere"], ["PATH", "nowhere"]),
        (["ingest", "{corpus}", "--home", "{corpus}"], ["--home", "notes.jsonl"]),
        (["status", "--home", "{corpus}/home"], ["--home", "notes.jsonl", "not a directory"]),
        (["query", "x", "--filter", "null"], ["--filter", "null"]),
        (["query", "x", "--filter", "[]"], ["--filter", "[]"]),
        (["query", "x", "--filter", "{}"], ["--filter", "{}"]),
        (["query", "x", "--filter", '{"a": NaN}'], ["--filter", "NaN"]),
        (["query", "x", "--filter", "{nope"], ["--filter", "{nope"]),
        (["query", "x", "--filter", '{"$nope": 1}'], ["--filter", "$nope"]),
        (["query", "x", "--filter", NESTED], ["--filter", "deep"]),
        (["query", "x", "--filter", '{"a": ' * 5_000 + "1" + "}" * 5_000], ["--filter", "deep"]),
        (["query", "x", "-k", "0"], ["--top-k", "0"]),
        (["query", "x", "--mode", "fuzzy"], ["--mode", "fuzzy"]),
        (["query", "  "], ["TEXT"]),
        (["ask", "why?", "--answerer", "poem"], ["--answerer", "poem"]),
        (["ask", "why?", "--filter", "null"], ["--filter", "null"]),
        (["ask", "why?", "--filter", NESTED], ["--filter", "deep"]),
        (["ask", "why?", "-k", "-3"], ["--top-k", "-3"]),
        (["ask", " "], ["QUESTION"]),
        (["eval", "--mode", "fuzzy"], ["--mode", "fuzzy"]),
        (["eval", "--tolerance", "-1"], ["--tolerance", "-1"]),
        (["eval", "--dataset", "{tmp}/nowhere"], ["--dataset", "nowhere"]),
        (["records", "backup", "{corpus}"], ["notes.jsonl", "not an earlier backup"]),
        (["records", "backup", "{tmp}"], ["is a folder"]),
        (["backfill"], ["PATH"]),
        (["backfill", "{corpus}", "--partition-size", "0"], ["--partition-size", "0"]),
        (["backfill", "{corpus}", "--export-parquet", "{corpus}/out"], ["--export-parquet", "is a file"]),
        (["refresh", "{corpus}", "--ttl", "soon"], ["--ttl", "soon"]),
        (["refresh", "{corpus}", "-n", "../x"], ["--namespace", "../x"]),
        (["ingest", "{corpus}", "-n", ".."], ["--namespace", "'..'"]),
        (["ingest", "{corpus}", "--index-version", "."], ["--index-version", "'.'"]),
        (["serve", "--port", "0"], ["--port", "0"]),
        (["versions", "list", "../x"], ["NS", "../x"]),
        (["versions", "promote", "docs", "../v"], ["VERSION", "../v"]),
        (["versions", "rollback", "a b"], ["NS", "a b"]),
        (["ingest"], ["PATH"]),
        (["nonsense"], ["nonsense"]),
        (["query", "x", "--bogus"], ["--bogus"]),
    ],
)
def test_a_bad_argument_is_one_line_naming_it(cli_env: Path, tmp_path: Path, args: list[str], named: list[str]) -> None:
    corpus = hostile_corpus(tmp_path / "corpus")
    argv = [arg.replace("{corpus}", str(corpus)).replace("{tmp}", str(tmp_path)) for arg in args]
    home = [] if "--home" in argv or argv[0] == "nonsense" else ["--home", str(cli_env)]
    line = user_error(runner.invoke(app, [*argv, *home]), *named)
    assert len(line) < 600  # a huge value is shortened, not echoed whole


def test_eval_of_a_folder_that_is_not_a_dataset_indexes_nothing(cli_env: Path, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nNot a golden set.\n", encoding="utf-8")
    user_error(runner.invoke(app, ["eval", "--dataset", str(folder), "--home", str(cli_env)]), "queries.jsonl")
    status = runner.invoke(app, ["status", "-n", "beir-notes", "--home", str(cli_env)])
    assert "1 documents" not in status.stdout and not (cli_env / "lancedb" / "ns_beir-notes.lance").exists()


def test_ctrl_c_is_one_line_and_exit_130(cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.cli import indexing

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(indexing, "_ingest_directly", interrupted)
    corpus = hostile_corpus(tmp_path / "corpus")
    result = runner.invoke(app, ["ingest", str(corpus), "--no-flow", "--home", str(cli_env)])
    assert (result.exit_code, result.stderr.splitlines(), result.stdout) == (130, ["error: interrupted"], "")


def test_a_backup_replaces_an_earlier_backup_but_never_the_live_files(cli_env: Path, tmp_path: Path) -> None:
    home = ["--home", str(cli_env)]
    assert runner.invoke(app, ["ingest", str(hostile_corpus(tmp_path / "corpus")), "--no-flow", *home]).exit_code == 0
    for live in ("embeddings.sqlite", "records.sqlite"):
        user_error(runner.invoke(app, ["records", "backup", str(cli_env / live), *home]), "not an earlier backup")
    restored = runner.invoke(app, ["records", "restore", str(cli_env / "records.sqlite"), *home])
    user_error(restored, "is the record store itself")  # it used to move the file aside and hang copying nothing
    for _ in range(2):
        backed_up = runner.invoke(app, ["records", "backup", str(tmp_path / "backup.sqlite"), *home])
        assert backed_up.exit_code == 0, backed_up.output
    assert runner.invoke(app, ["status", *home]).exit_code == 0  # both live files as they were


def test_a_full_ingest_of_another_folder_of_the_same_name_deletes_nothing_unless_forced(
    cli_env: Path, tmp_path: Path
) -> None:
    first, other = tmp_path / "p1" / "docs", tmp_path / "p2" / "docs"
    for root, names in ((first, ("a", "b", "c")), (other, ("d",))):
        root.mkdir(parents=True)
        for name in names:
            (root / f"{name}.md").write_text(f"# {name}\n\nThe text of document {name}.\n", encoding="utf-8")
    home = ["--home", str(cli_env), "--no-flow"]
    assert runner.invoke(app, ["ingest", str(first), *home]).exit_code == 0
    refused = user_error(runner.invoke(app, ["ingest", str(other), "--full", *home]), "--force-delete")
    assert "no longer holds 3 of the 3 documents" in refused and "another folder named 'docs'" in refused
    status = runner.invoke(app, ["status", "--home", str(cli_env)])
    assert "3 documents" in status.stdout and "rolled_back" in status.stdout
    user_error(runner.invoke(app, ["ingest", str(other), "--force-delete", *home]), "--force-delete", "--full")
    forced = runner.invoke(app, ["ingest", str(other), "--full", "--force-delete", *home])
    assert forced.exit_code == 0 and "1 documents" in runner.invoke(app, ["status", "--home", str(cli_env)]).stdout


def test_a_refused_api_key_is_a_user_error_and_leaves_the_namespace_free_for_another_model(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragline.testing.openai_server import LoopbackOpenAI

    home = ["--home", str(cli_env), "--no-flow"]
    with LoopbackOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0123456789abcdef")
        monkeypatch.setenv("RAGLINE_EMBEDDER", "openai")
        user_error(runner.invoke(app, ["ingest", str(SAMPLE), *home]), "the API key was refused")
    monkeypatch.setenv("RAGLINE_EMBEDDER", "hashing")  # the failed run bound nothing for good
    assert runner.invoke(app, ["ingest", str(SAMPLE), *home]).exit_code == 0
    assert "model hashing" in runner.invoke(app, ["status", "--home", str(cli_env)]).stdout


def test_no_arguments_shows_the_help(cli_env: Path) -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "ingest" in result.output


# --- runtime failures: one line, exit 1, the traceback only with --verbose --------------------------------------


def test_a_busy_namespace_names_it_and_what_to_do(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_LOCK_WAIT_S", "0")
    corpus = hostile_corpus(tmp_path / "corpus")
    with FileLocks(cli_env / "locks").hold("docs"):
        result = runner.invoke(app, ["ingest", str(corpus), "--home", str(cli_env), "-n", "docs"])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "'docs'" in line and "lock_wait_s" in line and "try again" in line


def test_a_runtime_failure_is_one_line_and_verbose_shows_the_traceback(cli_env: Path) -> None:
    cli_env.mkdir(parents=True)
    (cli_env / "records.sqlite").mkdir()  # the record store cannot be opened
    quiet = runner.invoke(app, ["status", "--home", str(cli_env)])
    assert quiet.exit_code == 1, quiet.output
    (line,) = quiet.stderr.splitlines()
    assert line.startswith("error: ") and "records.sqlite" in line
    verbose = runner.invoke(app, ["--verbose", "status", "--home", str(cli_env)])
    assert verbose.exit_code == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == line


def test_an_unexpected_error_is_named_by_its_type(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        {}["[bold]key"]
    except KeyError as exc:
        assert report(exc, verbose=False) == 1
        quiet = capsys.readouterr().err
        assert report(exc, verbose=True) == 1
        verbose = capsys.readouterr().err
    assert quiet == "error: KeyError: '[bold]key' (ragline --verbose … shows the traceback)\n"
    assert verbose.startswith("Traceback (most recent call last)") and verbose.endswith(
        "error: KeyError: '[bold]key'\n"
    )
    assert report(RaglineError("[red]x[/blue] failed"), verbose=False) == 1
    assert report(ConfigError("bad [bold]"), verbose=False) == 2
    assert capsys.readouterr().err == "error: [red]x[/blue] failed\nerror: bad [bold]\n"


# --- the same through a real process ----------------------------------------------------------------------------


def ragline(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path,
    reader_gone: bool = False,
    stdout_closed: bool = False,
    unset: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``python -m ragline.cli ARGS`` in a fresh process: this repository importable, the hashing embedder, without
    the variables named in ``unset``; ``reader_gone``: its output pipe is closed before it writes; ``stdout_closed``:
    it starts without a standard output at all (in both, nothing on stdout comes back)."""
    dropped = {"PREFECT_API_URL", *unset}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAGLINE_") and k not in dropped}
    environment |= {"PYTHONPATH": str(REPO), "RAGLINE_EMBEDDER": "hashing", **(env or {})}
    command = [sys.executable, "-m", "ragline.cli", *args]
    if stdout_closed:
        command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
    with subprocess.Popen(
        command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        if reader_gone or stdout_closed:
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            stdout, stderr = "", process.stderr.read()
            process.wait(timeout=120)
        else:
            stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_help_to_a_pipe_whose_reader_left_ends_quietly_with_141(tmp_path: Path) -> None:
    """``ragline --help | true``: typer prints help through a Rich console of its own, which exits 1 on a broken
    pipe."""
    for args in (["--help"], ["ingest", "--help"]):
        gone = ragline(*args, cwd=tmp_path, reader_gone=True)
        assert (gone.returncode, gone.stderr) == (141, ""), args
    shown = ragline("--help", cwd=tmp_path)
    assert shown.returncode == 0 and "ingest" in shown.stdout


def test_exit_1_with_output_sent_to_the_null_device_from_the_start_stays_1(tmp_path: Path) -> None:
    """Only output that went to the null device while the command ran (Rich's answer to a broken pipe) is 141."""
    command = [sys.executable, "-c", "from ragline.cli import app; app(prog_name='ragline')"]
    env = {**os.environ, "_RAGLINE_COMPLETE": "no_such_shell"}  # click's completion: an unknown shell exits 1
    done = subprocess.run(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, check=False)
    assert done.returncode == 1


def test_no_temporary_prefect_server_is_started_when_prefect_settings_name_one_or_forbid_it() -> None:
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    from ragline.tasks.server import start_temporary_server

    before = SubprocessASGIServer._instances.get(None)
    for updates in ({PREFECT_API_URL: "http://127.0.0.1:9/api"}, {PREFECT_SERVER_EPHEMERAL_ENABLED: False}):
        with temporary_settings(updates=updates):  # as a profile or prefect.toml would set them
            start_temporary_server()
        assert SubprocessASGIServer._instances.get(None) is before


@pytest.mark.slow  # eight fresh interpreters
def test_exit_statuses_and_stderr_of_a_real_process(tmp_path: Path) -> None:
    corpus, home = hostile_corpus(tmp_path / "corpus"), str(tmp_path / "home")
    cases = [
        (["ingest", str(corpus), "--home", home], {"RAGLINE_CHUNK_OVERLAP": "500"}, ["chunk_overlap", "500"]),
        (["status", "-n", "../x", "--home", home], {}, ["--namespace", "../x"]),
        (["query", "x", "--filter", NESTED, "--home", home], {}, ["--filter", "deep"]),
        (["query", "x", "--filter", "null", "--home", home], {}, ["--filter", "null"]),
        (["ask", "x", "--filter", '{"t": {"$gt": "[/x]"}}', "--home", home], {}, ["[/x]"]),
    ]
    for args, env, named in cases:
        done = ragline(*args, env=env, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")
        assert all(name in done.stderr for name in named), done.stderr

    with FileLocks(tmp_path / "home" / "locks").hold("docs"):
        busy = ragline(
            "ingest", str(corpus), "--home", home, "-n", "docs", env={"RAGLINE_LOCK_WAIT_S": "0"}, cwd=tmp_path
        )
    assert busy.returncode == 1 and len(busy.stderr.splitlines()) == 1 and "'docs'" in busy.stderr
    assert "Traceback" not in busy.stderr

    ok = ragline("ingest", str(corpus), "--home", home, "-n", "docs", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    shown = ragline("query", "chunk overlap", "--home", home, "-n", "docs", "--mode", "bm25", cwd=tmp_path)
    assert shown.returncode == 0 and MARKUP in shown.stdout and shown.stderr == ""

    gone = ragline("query", "chunk overlap", "--home", home, "-n", "docs", cwd=tmp_path, reader_gone=True)
    assert (gone.returncode, gone.stderr) == (141, "")  # `ragline query … | head`, with head gone: quietly
    closed = ragline("status", "--home", home, "-n", "docs", cwd=tmp_path, stdout_closed=True)  # `ragline … >&-`
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr


def test_an_empty_host_is_every_interface_and_each_is_checked(tmp_path: Path) -> None:
    config = RaglineConfig(home=tmp_path / "home", service_host="", service_port=0)
    check_listenable(config)  # as asyncio: "" listens on every interface (it was refused as an unknown host)
    with socket.socket(socket.AF_INET6) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        taken.bind(("::", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on :{port}: Address already in use"):
            check_listenable(config.model_copy(update={"service_port": port}))  # the IPv6 one of the two is taken


def test_a_temporary_prefect_server_sends_no_telemetry_unless_told_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragline.tasks import server

    monkeypatch.setattr(server, "start_temporary_server", lambda: None)  # the setting is read when a server starts
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    assert not tracked(None) and "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ  # no flow, no server
    assert tracked(True) and os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    assert tracked(True) and os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the user's choice stands
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api")
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED")
    assert tracked(None) and "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ  # their server, their setting


@pytest.mark.slow  # a temporary Prefect server
def test_a_failed_flow_run_is_one_error_line_without_a_traceback(tmp_path: Path) -> None:
    corpus, home = hostile_corpus(tmp_path / "corpus"), str(tmp_path / "home")
    unreadable = tmp_path / "notes.csv"
    unreadable.write_text("a,b\n", encoding="utf-8")
    for command in ("ingest", "backfill"):
        refused = ragline(command, str(unreadable), "--home", home, "--flow", cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.startswith("error: cannot read"), refused.stderr
        assert len(refused.stderr.splitlines()) == 1  # refused before a Prefect server was started for it

    with FileLocks(tmp_path / "home" / "locks").hold("docs"):
        failed = ragline(
            "ingest",
            str(corpus),
            "--home",
            home,
            "-n",
            "docs",
            "--flow",
            env={"RAGLINE_LOCK_WAIT_S": "0"},
            cwd=tmp_path,
            unset=["PREFECT_SERVER_ANALYTICS_ENABLED"],
        )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "telemetry" not in failed.stderr  # offline, the temporary server's telemetry logged an error
    assert "Encountered exception" in failed.stderr  # Prefect's own line about the run stays, as one line
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "'docs'" in errors[0], failed.stderr
