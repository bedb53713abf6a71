"""Work that owns a run outside the engine (`deliver` again, `cancel --compensate`, the
withdrawal of --on-failure compensate) keeps its lease alive for as long as it works.

Real `durabatch` subprocesses, a real webhook receiver on 127.0.0.1 that answers each
POST late, and the lease read from the SQLite file while the re-delivery goes on."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from crashkit import clean_env, durabatch_bin, note_text, query
from fakehook import FakeHook, stored_late

DOCS = 4
LATE = 1.0  # seconds the receiver takes to answer each POST
TTL = "1"  # the shortest lease durabatch accepts, in seconds


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [durabatch_bin(), *args, "--db", "runs.db"],
        cwd=tmp_path, env=clean_env(**env), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_a_redelivery_longer_than_the_lease_keeps_owning_the_run(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(DOCS):
        (tmp_path / "in" / f"note_{i}.txt").write_text(note_text(i), encoding="utf-8")
    run = cli(tmp_path, "run", "in")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    run_id = out.splitlines()[0]
    with FakeHook() as hook:
        hook.script("POST", *[stored_late(LATE) for _ in range(DOCS)])
        deliver = cli(tmp_path, "deliver", run_id, "--to", hook.url, DURABATCH_LEASE_TTL=TTL)
        try:
            checked = 0
            deadline = time.monotonic() + 60
            while deliver.poll() is None and time.monotonic() < deadline:
                (lease,) = query(tmp_path / "runs.db", "SELECT lease_session, lease_expires "
                                 "FROM runs WHERE id = ?", (run_id,))  # fmt: skip
                if len(hook.posts()) >= 2 and lease["lease_session"] is not None:
                    # past a whole lease since the session began: it must have been renewed
                    assert lease["lease_expires"] > time.time(), "the lease lapsed mid-delivery"
                    checked += 1
                time.sleep(0.05)
            out, err = deliver.communicate(timeout=60)
        finally:
            if deliver.poll() is None:
                deliver.kill()
        assert deliver.returncode == 0, err
        assert checked > 0  # the lease was looked at while the delivery still ran
        assert len(hook.stored) == DOCS
