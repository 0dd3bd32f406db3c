"""The package alone: a wheel built from the repository, installed in a fresh venv outside the clone,
runs `ally up --demo` and answers `ally chat`, with the pinned Codex found on PATH."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ally.codex.binary import find_codex_binary
from ally.codex.version import CODEX_VERSION
from tests.processes import processes_with_env
from tests.test_up import start_up, wait_gone

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    place = tmp_path_factory.mktemp("no-clone")
    assert not place.resolve().is_relative_to(REPO)
    yield place
    for pid in processes_with_env(f"WORK_ALLY_HOME={place / 'ally-home'}"):
        os.kill(pid, signal.SIGKILL)  # never let a failure leak processes into the next test


def run(*command: str | Path, **options: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=300, **options
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@pytest.mark.codex
def test_a_wheel_installed_outside_the_clone_runs_the_demo_and_answers_a_terminal_chat(outside: Path) -> None:
    started = time.monotonic()
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", outside / "dist", REPO)
    (wheel,) = (outside / "dist").glob("work_ally-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("dev/", "tests/", "bench/"))]
    assert "ally/model_server.py" in names  # the demo's model ships in the package
    assert "ally/templates/AGENTS.md" in names  # the persona template new workspaces get

    venv = outside / "venv"
    run(sys.executable, "-m", "venv", venv)
    lock = REPO / "dev" / "requirements.lock"
    run(venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "-c", lock, wheel)
    built = time.monotonic() - started

    # Nothing of the clone is reachable: no repo path on PATH or PYTHONPATH, cwd outside it; the only
    # thing borrowed is the pinned Codex, as `npm install -g @openai/codex@<pin>` would put it on PATH.
    system_path = [
        p for p in os.environ["PATH"].split(os.pathsep) if not Path(p).resolve().is_relative_to(REPO)
    ]
    path = os.pathsep.join([str(venv / "bin"), str(find_codex_binary().parent), *system_path])
    env = {"PATH": path, "PYTHONPATH": ""}
    ally = (str(venv / "bin" / "ally"),)
    where = run(
        venv / "bin" / "python",
        "-c",
        "import ally, importlib.util as u; print(ally.__file__, u.find_spec('dev'))\n"
        "from ally.persona import persona; assert persona('Tess').startswith('# Tess')",
        cwd=outside,
        env=env | {"HOME": str(outside)},
    )
    assert where.stdout.split() == [
        str(
            venv
            / "lib"
            / f"python{sys.version_info.major}.{sys.version_info.minor}"
            / "site-packages"
            / "ally"
            / "__init__.py"
        ),
        "None",
    ], where.stdout

    # Before Codex is installed, doctor names the npm command that installs the pinned release.
    no_codex = [p for p in system_path if not (Path(p) / "codex").exists()]
    bare = env | {"PATH": os.pathsep.join([str(venv / "bin"), *no_codex])}
    bare |= {"HOME": str(outside), "WORK_ALLY_HOME": str(outside / "bare-home")}
    doctor = subprocess.run(
        [*ally, "doctor"], capture_output=True, text=True, env=bare, cwd=outside, timeout=120
    )
    assert "[FAIL] codex: Codex is not installed" in doctor.stdout, doctor.stdout
    assert f"npm install -g @openai/codex@{CODEX_VERSION}" in doctor.stdout
    assert "Traceback" not in doctor.stdout + doctor.stderr

    up = start_up(outside / "ally-home", "--demo", env=env, ally=ally, cwd=outside)
    assert any("DEMO MODE" in line for line in up.output)
    doctor = subprocess.run(
        [*ally, "doctor"], capture_output=True, text=True, env=up.env, cwd=outside, timeout=120
    )
    codex_line = next(line for line in doctor.stdout.splitlines() if "] codex: " in line)
    assert str(find_codex_binary()) in codex_line and CODEX_VERSION in codex_line, doctor.stdout

    chat = subprocess.Popen(
        [*ally, "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=up.env,
        cwd=outside,
    )
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write("hello from the installed package\n")
    chat.stdin.flush()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("You said: hello" in s for s in seen):
        seen.append(chat.stdout.readline().rstrip())
    chat.stdin.close()
    assert chat.wait(timeout=30) == 0
    assert "codex> (demo model) You said: hello from the installed package" in seen, seen
    running = processes_with_env(up.marker)
    codex = str(find_codex_binary())
    assert [c for c in running.values() if str(REPO) in c and codex not in c] == [], running
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(timeout=60) == 0
    assert wait_gone(up.marker) == {}
    print(f"wheel built and installed in {built:.1f} s")
