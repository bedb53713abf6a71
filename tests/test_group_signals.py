"""Ctrl-C in a terminal, and systemd's default KillMode=control-group, signal the whole
process group: the parser workers get the signal too. One still starting must not die of
it (it used to, and the run then halted, exit 3, saying a parser could not start)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from crashkit import NOT_FINISHED, clean_env, durabatch_bin, note_text, query


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_group_while_a_parser_starts_drains_the_run(
    tmp_path: Path, sent: signal.Signals
) -> None:
    docs = tmp_path / "in"
    docs.mkdir()
    for n in range(20):
        (docs / f"note_{n:02d}.txt").write_text(note_text(n), encoding="utf-8")
    db = tmp_path / "d.db"
    err = tmp_path / "err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen([durabatch_bin(), "run", str(docs), "--db", str(db)],
                                cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not children(proc.pid):  # the first parser worker, still starting
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.002)
        os.killpg(proc.pid, sent)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert code == NOT_FINISHED, text
    assert "could not start" not in text, text
    # the only traceback allowed is a starting worker's own KeyboardInterrupt, which the
    # interpreter prints itself when SIGINT lands in its start-up, before our code runs
    assert text.count("Traceback") <= text.count("KeyboardInterrupt"), text
    (run,) = query(db, "SELECT status FROM runs")
    assert run["status"] == "interrupted"
