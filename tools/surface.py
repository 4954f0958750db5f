"""The gateway's public surface as golden files: the OpenAPI spec, the `--help` of every
command line, the metric names of `GET /metrics`.

    python -m tools.surface            # compare with the stored copies; exit 1 and a diff if they differ
    python -m tools.surface --write    # regenerate them (after a deliberate change: commit the diff)

Stored in docs/openapi.json (the API contract, kept in the repo), docs/central-openapi.json
(head office's, `phygital central --http`) and tests/surface/ (`help/*.txt`,
`metrics.txt`); tests/tools/test_surface.py runs the comparison in CI, so every change to a path,
model, flag or metric shows up as a diff of these files. Nothing depends on the machine: the
spec comes from an unstarted gateway, help is formatted at a fixed width with fixed program
names, and metric names come from rendering `/metrics` against a fresh database with every
optional part (chain, CoAP) present.
"""
from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT / "docs" / "openapi.json"
CENTRAL_OPENAPI = ROOT / "docs" / "central-openapi.json"   # head office's HTTP (phygital central --http)
SURFACE = ROOT / "tests" / "surface"
HELP_WIDTH = 100
# argparse's layout changes between Python minors (3.13 reworded usage lines): help text is
# compared only on the minor it was written with (the CI machine's, see .ci/run)
HELP_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


# --- OpenAPI ---------------------------------------------------------------------------------

def openapi_text() -> str:
    from gateway.app import Gateway, GatewayConfig

    with tempfile.TemporaryDirectory() as tmp:  # not started: only its routes are read
        spec = Gateway(GatewayConfig(db_path=Path(tmp) / "gw.db")).app.openapi()
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def central_openapi_text() -> str:
    from gateway.central.http import create_app

    spec = create_app("", "0" * 16).openapi()   # not started, no database: routes only
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- --help of every command line ------------------------------------------------------------

class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _parser_of(main: Callable[..., Any], argv: list[str]) -> argparse.ArgumentParser:
    """The parser `main(argv)` builds, caught at its first parse (nothing runs)."""
    orig_parse_args = argparse.ArgumentParser.parse_args
    orig_parse_known = argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *a: Any, **kw: Any) -> Any:
        raise _Captured(self)

    # patched for the capture only, restored below
    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    try:
        with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            main(argv)
    except _Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_args = orig_parse_args  # type: ignore[method-assign]
        argparse.ArgumentParser.parse_known_args = orig_parse_known  # type: ignore[method-assign]
    raise RuntimeError(f"{main.__module__}.{main.__name__} returned without parsing its arguments")


def _walk(name: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    yield name, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                if p.add_help:  # add_help=False: a delegate, listed below with its own parser
                    yield from _walk(f"{name} {sub}", p)


def _clis() -> list[tuple[str, Callable[..., Any]]]:
    from gateway import __main__ as gateway_main
    from gateway.central import consumer as central
    from gateway.http import auth
    from gateway.storage import db_cli, schema_cli
    from hil import faults
    from tools import cli, conformance, console, deploy, firmware, loadgen, lockers, mip_package, provision, tagstation

    return [("phygital", cli.main),
            ("phygital gateway", gateway_main.main), ("phygital lockers", lockers.main),
            ("phygital token", auth.cli), ("phygital provision", provision.main),
            ("phygital schema", schema_cli.main), ("phygital db", db_cli.main),
            ("phygital conformance", conformance.main),
            ("phygital central", central.main), ("phygital firmware", firmware.main),
            ("python -m tools.console", console.main), ("python -m tools.deploy", deploy.main),
            ("python -m tools.loadgen", loadgen.main), ("python -m tools.tagstation", tagstation.main),
            ("python -m tools.mip_package", mip_package.main), ("python -m hil.faults", faults.main)]
    # tools.lockers, tools.provision and tools.conformance are the same parsers as
    # `phygital lockers`/`provision`/`conformance`


def help_texts() -> dict[str, str]:
    old_argv, old_columns = sys.argv, os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    out: dict[str, str] = {}
    try:
        for prog, main in _clis():
            sys.argv = [prog]  # parsers without an explicit prog= take it from argv[0]
            for name, text in _walk(prog, _parser_of(main, [])):
                out[name.replace("python -m ", "").replace(" ", "_") + ".txt"] = text
    finally:
        sys.argv = old_argv
        if old_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_columns
    return out


# --- metric names ----------------------------------------------------------------------------

def metric_names() -> str:
    """`# TYPE` lines of `/metrics`, rendered against a fresh database with every part present."""
    from gateway.integrations.capacity import CapacityWatch
    from gateway.integrations.metrics import GatewayMetrics
    from gateway.storage.store import Store, connect_all

    async def render() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            conn = connect_all(Path(tmp) / "gw.db")  # with the command file: /metrics counts commands
            store = Store(conn)

            async def read(fn: Callable[..., Any], *args: Any) -> Any:
                return fn(store, *args)

            async def backlog() -> int:
                return 0

            queue: asyncio.Queue[Any] = asyncio.Queue()
            gw = SimpleNamespace(
                db=SimpleNamespace(read=read), ingest=SimpleNamespace(queue=queue, ack_failures=0),
                broadcaster=SimpleNamespace(subscribers=[], refused={}),
                webhooks=SimpleNamespace(backlog=backlog),
                chain=SimpleNamespace(backlog=backlog, published=0, failures=0),
                bus=SimpleNamespace(connected=False, publish_failures=0),
                coap=SimpleNamespace(auth_refusals=dict),
                capacity=CapacityWatch(SimpleNamespace(read=read, path=Path(tmp) / "gw.db")))  # type: ignore[arg-type]
            try:
                return await GatewayMetrics().render(gw)  # a stand-in with what render() reads (metrics.Sources)
            finally:
                conn.close()

    lines = asyncio.run(render()).decode().splitlines()
    types = sorted(line.removeprefix("# TYPE ") for line in lines if line.startswith("# TYPE "))
    # prometheus_client adds a `<counter>_created` gauge unless PROMETHEUS_DISABLE_CREATED_SERIES
    # is set in the environment: not a name of ours, left out
    types = [t for t in types if not (t.endswith(" gauge") and t.split()[0].endswith("_created"))]
    return "".join(t + "\n" for t in types)


# --- golden files ----------------------------------------------------------------------------

HELP_DIR = SURFACE / f"help-py{HELP_PYTHON}"


def current(with_help: bool = True) -> dict[Path, str]:
    files = {OPENAPI: openapi_text(), CENTRAL_OPENAPI: central_openapi_text(),
             SURFACE / "metrics.txt": metric_names()}
    if with_help:
        files.update({HELP_DIR / name: text for name, text in help_texts().items()})
    return files


def diff(files: dict[Path, str]) -> list[str]:
    """Differences between `files` and the stored copies (plus stored help files no command
    has any more), as unified diffs."""
    out: list[str] = []
    for path, text in files.items():
        old = path.read_text() if path.exists() else ""
        if old != text:
            rel = path.relative_to(ROOT)
            out.append("".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                    f"stored/{rel}", f"now/{rel}")) or f"{rel}: differs\n")
    help_dirs = {p.parent for p in files if p.parent.name.startswith("help-py")}
    for d in help_dirs:
        for stale in sorted(set(d.glob("*.txt")) - set(files)):
            out.append(f"{stale.relative_to(ROOT)}: stored, but no command has this help any more\n")
    return out


def write(files: dict[Path, str]) -> None:
    for d in {p.parent for p in files if p.parent.name.startswith("help-py")}:
        for stale in set(d.glob("*.txt")) - set(files):
            stale.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.surface", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="store the current surface as the golden files")
    args = ap.parse_args(argv)
    with_help = args.write or HELP_DIR.is_dir()
    if not with_help:
        print(f"--help not compared: stored for Python {', '.join(p.name[6:] for p in SURFACE.glob('help-py*'))}, "
              f"this is {HELP_PYTHON} (argparse's layout differs between minors)")
    files = current(with_help)
    if args.write:
        write(files)
        print(f"wrote {len(files)} files (docs/openapi.json, docs/central-openapi.json, "
              "tests/surface/)")
        return 0
    problems = diff(files)
    if problems:
        sys.stdout.write("".join(problems))
        print("\nthe public surface changed: if you meant it, run `python -m tools.surface --write` "
              "and commit the diff")
        return 1
    print(f"public surface unchanged ({len(files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
