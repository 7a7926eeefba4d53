"""`keel worker` liveness: a heartbeat file while its job threads live, read by `keel worker --check`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.jobs._health import Heartbeat, check_heartbeat, default_heartbeat_path, job_threads_alive

from .test_server_api import make_workspace, scripted_app


def test_a_heartbeat_is_fresh_while_alive_stale_when_stuck_and_gone_when_stopped(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    assert check_heartbeat(path)[0] is False
    with Heartbeat(path, interval_s=0.05):
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        ok, why = check_heartbeat(path)
        assert ok and "0s old" in why
    assert not path.exists() and "no heartbeat" in check_heartbeat(path)[1]  # a stopped worker is not alive

    path.touch()
    old = time.time() - 120
    os.utime(path, (old, old))  # a worker that stopped touching it two minutes ago
    ok, why = check_heartbeat(path, max_age_s=30)
    assert not ok and "120s old" in why


def test_no_heartbeat_while_the_job_threads_are_dead(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    with Heartbeat(path, interval_s=0.05, alive=lambda: False):
        time.sleep(0.3)
        assert not path.exists()


def test_job_threads_alive_follows_the_embedded_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_workspace(tmp_path, monkeypatch)
    app = scripted_app()
    assert not job_threads_alive()
    assert app.jobs.start(threads=1)
    try:
        assert job_threads_alive()  # the pool's thread names are the ones the probe looks for
    finally:
        app.jobs.stop()
    assert not job_threads_alive()


def test_the_default_heartbeat_is_per_data_dir_outside_it(tmp_path: Path) -> None:
    one, two = default_heartbeat_path(tmp_path / "a"), default_heartbeat_path(tmp_path / "b")
    assert one != two and one.parent == two.parent and tmp_path / "a" not in one.parents


def test_keel_worker_check_exits_0_while_a_worker_runs_and_1_after(tmp_path: Path) -> None:
    env = {**os.environ, "KEEL_HOME": str(tmp_path / "home")}
    beat = tmp_path / "worker.heartbeat"
    keel = [sys.executable, "-m", "keel"]

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*keel, "worker", "--check", "--heartbeat", str(beat), "--json"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert check().returncode == 1
    proc = subprocess.Popen([*keel, "worker", "--heartbeat", str(beat)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not beat.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        healthy = check()
        assert healthy.returncode == 0 and '"healthy": true' in healthy.stdout, healthy.stdout + healthy.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    gone = check()
    assert gone.returncode == 1 and '"healthy": false' in gone.stdout


def test_keel_worker_check_in_process(keel_home: Path) -> None:
    result = CliRunner().invoke(cli, ["worker", "--check"])
    assert result.exit_code == 1 and "no heartbeat" in result.stderr
