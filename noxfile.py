"""One nox session per task; each installs convbench as scripts/bootstrap.sh does."""

import nox

nox.options.sessions = ["tests", "lint", "gate"]
nox.options.default_venv_backend = "venv"


def install(session: nox.Session) -> None:
    session.install("torch==2.13.0")
    session.install("-e", ".[dev]")
    session.install("--no-deps", "recbole==1.2.1")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite, including the end-to-end run on MovieLens-100K."""
    install(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common mistakes with ruff."""
    session.install("ruff")
    session.run("ruff", "check", "convrec", "baselines", "bench", "tests", "noxfile.py")


@nox.session
def gate(session: nox.Session) -> None:
    """Fail when a model's memory or compute grew against bench/gate_baseline.json."""
    install(session)
    session.run("convbench", "gate", *session.posargs)


@nox.session
def benchmark(session: nox.Session) -> None:
    """Time a training step of each model at a few sizes with pytest-benchmark."""
    install(session)
    session.run("pytest", "benchmarks", "--benchmark-only",
                *session.posargs)


@nox.session
def accuracy(session: nox.Session) -> None:
    """Run the full accuracy protocol: three models, MovieLens-100K, three seeds (hours on CPU)."""
    install(session)
    session.run("convbench", "accuracy", "--all-datasets", *session.posargs)


@nox.session
def scale(session: nox.Session) -> None:
    """Run the efficiency sweep up to L = 4096 and write reports/scale."""
    install(session)
    session.run("convbench", "scale", "--max-len", "4096", *session.posargs)
