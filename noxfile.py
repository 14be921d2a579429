"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench``, ``nox -s bench_ws``,
``nox -s bench_serve`` (``nox`` runs lint and tests).

Each session makes its own virtualenv; arguments after ``--`` go to the tool, e.g.
``nox -s tests -- -k transports`` or ``nox -s bench -- --quick``.
"""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (interop tests skip when their tool is missing)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy --strict on the package and the tests."""
    # test extras too: mypy checks the tests and the testing kit, which import pytest and co.
    session.install("-e", ".[test,dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")  # strict, on the files pyproject.toml's [tool.mypy] lists (as CI runs it)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against trio.SSLStream (and asyncio/uvloop) in one run."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def bench_ws(session: nox.Session) -> None:
    """WebSocket messages per second over TLS against trio-websocket, in one run."""
    session.install("-e", ".[bench,test]")
    session.run("python", "benchmarks/bench_ws.py", *session.posargs)


@nox.session
def bench_serve(session: nox.Session) -> None:
    """`tlsattach serve` under 64 clients against trio.serve_ssl_over_tcp and stunnel."""
    session.install("-e", ".[bench,test]")
    session.run("python", "benchmarks/bench_serve.py", *session.posargs)
