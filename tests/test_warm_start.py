"""The warm-started commands the kill tests run (tests/warm_start.py) behave as fresh interpreters do: what a test
reads of a subprocess (exit status, a death by signal, output, environment, working folder) is the same."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import warm_start

CODE = """
import atexit, os, signal, sys
atexit.register(lambda: print("atexit ran", flush=True))
print("argv", sys.argv[1:], "env", os.environ.get("WARM_TEST"), "cwd", os.getcwd())
print("pid differs", os.getpid() != int(os.environ["TEST_PID"]))
print("écrit", file=sys.stderr)
how = sys.argv[1]
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if how == "interrupt":
    raise KeyboardInterrupt
sys.exit(int(how))
"""


def _both(how: str, tmp_path):
    env = {**os.environ, "WARM_TEST": "ü 1", "TEST_PID": str(os.getpid())}
    cold = subprocess.run([sys.executable, "-c", CODE, how], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        warm = warm_start.run(CODE, [how], env, timeout=60)
    finally:
        os.chdir(here)
    return cold, warm


@pytest.mark.parametrize("how", ["0", "3", "kill", "interrupt"])
def test_a_warm_command_ends_and_speaks_as_a_fresh_interpreter(tmp_path, how):
    cold, warm = _both(how, tmp_path)
    assert warm.returncode == cold.returncode
    assert warm.stdout == cold.stdout
    assert "pid differs True" in warm.stdout and f"cwd {tmp_path}" in warm.stdout and "env ü 1" in warm.stdout
    if how == "kill":
        assert warm.returncode == -9 and "atexit ran" not in warm.stdout
    else:
        assert "atexit ran" in warm.stdout
    if how == "interrupt":
        assert warm.returncode == -2 and "KeyboardInterrupt" in warm.stderr
    else:
        assert warm.stderr == cold.stderr == "écrit\n"


def test_a_started_command_can_be_waited_for_polled_and_killed(tmp_path):
    flag = tmp_path / "go"
    proc = warm_start.start(f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.01)\n"
                            "print('went')", [], dict(os.environ))
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)
    flag.touch()
    assert proc.communicate(timeout=60) == ("went\n", "")
    assert proc.returncode == 0
    stuck = warm_start.start("import time\ntime.sleep(60)", [], dict(os.environ))
    stuck.kill()
    assert stuck.wait(timeout=60) == -9
