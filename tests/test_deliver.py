"""Side effects for real: delivery to a folder and to a webhook receiver on 127.0.0.1,
kill -9 between a POST and its commit, cancel with compensation, an interrupted
compensation resumed, --on-failure compensate and re-delivery.

Every command is the installed console script on a real SQLite file; the receiver is
``fakehook.FakeHook``, a real HTTP server that records each request as it arrives.
The sample documents include a broken PDF, so a finished run exits 1 with 8 done.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from crashkit import SAMPLE_DOCS, Proc, Workspace, query
from fakehook import FakeHook, status

from durabatch.errors import DocumentError, Reason
from durabatch.store.records import Delivered, Delivery
from durabatch.targets import Folder

DONE = 8  # of the 9 sample documents; the broken PDF fails
FAILED = 1  # exit code: finished, some documents failed
NOT_FINISHED = 75
CANCELLED = 4  # a run stopped by `durabatch cancel`
HALTED = 3
HELD = "kestrel_roadmap"  # the document whose delivery the receiver holds


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    shutil.copytree(SAMPLE_DOCS, tmp_path / "in")
    yield workspace
    workspace.cleanup()


@pytest.fixture
def hook() -> Iterator[FakeHook]:
    with FakeHook() as receiver:
        yield receiver


def run_id_of(proc: Proc) -> str:
    return proc.stdout.splitlines()[0]


def deliveries(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    rows = query(ws.db, "SELECT * FROM deliveries WHERE run_id = ? ORDER BY id", (run_id,))
    return [dict(row) for row in rows]


def event_types(ws: Workspace, type_: str) -> list[dict[str, Any]]:
    return [e.data for e in ws.events() if e.type == type_]


def files_under(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_verified(ws: Workspace, run_id: str) -> None:
    proc = ws.verify(run_id)
    assert proc.popen.returncode == 0, proc.describe()


def wait_until(condition: Callable[[], bool], proc: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.popen.poll() is None, f"exited too early:\n{proc.describe()}"
        assert time.monotonic() < deadline, f"not reached in {timeout}s:\n{proc.describe()}"
        time.sleep(0.01)


# -- a folder ---------------------------------------------------------------------------


def test_folder_gets_one_whole_file_per_document_and_nothing_twice(ws: Workspace) -> None:
    proc = ws.cli("run", "in", "--deliver-to", "out")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    out = files_under(ws.root / "out")
    assert len(out) == DONE and all(name.endswith(".json") for name in out)
    export = ws.export(run_id)
    for name, data in out.items():
        body = json.loads(data)  # whole JSON, no temporary file left beside it
        row = export[body["path"]]
        assert name == body["path"] + ".json"
        assert (body["run_id"], body["summary"], body["entities"]) == (
            run_id, row["summary"], row["entities"])  # fmt: skip
    rows = deliveries(ws, run_id)
    assert len(rows) == DONE and {r["status"] for r in rows} == {"delivered"}
    assert len(event_types(ws, "delivered")) == DONE
    assert_verified(ws, run_id)

    again = ws.cli("deliver", run_id, "--to", "out")
    assert again.popen.returncode == 0, again.describe()
    assert "0 delivered, 8 there already" in again.stdout
    assert files_under(ws.root / "out") == out
    assert len(event_types(ws, "delivered")) == DONE


def test_a_crash_leftover_is_never_seen_and_another_file_is_never_replaced(
    tmp_path: Path,
) -> None:
    folder = Folder(str(tmp_path), tmp_path)
    target = folder.path_for("in/a.txt")
    target.parent.mkdir(parents=True)
    leftover = target.with_name(".durabatch-killed.tmp")
    leftover.write_bytes(b'{"half": ')  # a writer killed mid-write left this
    body = b'{"whole": true}\n'
    done = publish(folder, "in/a.txt", body, "k1")
    assert json.loads(target.read_bytes()) == {"whole": True}
    assert sorted(p.name for p in target.parent.iterdir()) == [leftover.name, target.name]
    assert publish(folder, "in/a.txt", body, "k1") == done  # repeat: no-op
    with pytest.raises(DocumentError) as refused:
        publish(folder, "in/a.txt", b'{"other": 1}\n', "k2")
    assert refused.value.reason == Reason.TARGET_EXISTS
    assert json.loads(target.read_bytes()) == {"whole": True}
    assert folder.path_for("../../etc/passwd") == tmp_path / "..." / "..." / "etc" / "passwd.json"
    # no real path maps where `..` does: a folder named `...` gets a dot more
    assert folder.path_for(".../etc/passwd") == tmp_path / "...." / "etc" / "passwd.json"
    assert folder.path_for("__/etc/passwd") == tmp_path / "__" / "etc" / "passwd.json"


def publish(folder: Folder, name: str, body: bytes, key: str) -> Delivered:
    return folder.publish(folder.plan(name, body, key), body)


def test_withdrawing_a_file_leaves_one_changed_since(tmp_path: Path) -> None:
    folder = Folder(str(tmp_path), tmp_path)
    done = publish(folder, "a.txt", b"ours\n", "k")
    delivery = Delivery(**vars(done))
    (tmp_path / "a.txt.json").write_bytes(b"edited by someone\n")
    assert folder.withdraw(delivery)[0] == "left"
    assert (tmp_path / "a.txt.json").exists()
    (tmp_path / "a.txt.json").write_bytes(b"ours\n")
    assert folder.withdraw(delivery)[0] == "withdrawn"
    assert not (tmp_path / "a.txt.json").exists()
    assert folder.withdraw(delivery) == ("withdrawn", "already gone")
    assert isinstance(done, Delivered)


def test_on_failure_compensate_withdraws_everything_the_run_delivered(ws: Workspace) -> None:
    (ws.root / "out").mkdir()
    (ws.root / "out" / "theirs.txt").write_text("was here before\n")
    before = files_under(ws.root / "out")
    proc = ws.cli("run", "in", "--deliver-to", "out", "--on-failure", "compensate")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    assert files_under(ws.root / "out") == before
    assert {r["status"] for r in deliveries(ws, run_id)} == {"withdrawn"}
    assert len(event_types(ws, "delivery_undone")) == DONE
    assert_verified(ws, run_id)


# -- a webhook --------------------------------------------------------------------------


def test_webhook_gets_each_document_once_with_its_idempotency_key(
    ws: Workspace, hook: FakeHook
) -> None:
    hook.script("POST", status(500), status(503))  # retried under the model calls' policy
    proc = ws.cli("run", "in", "--deliver-to", hook.url, "--concurrency", "2")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    assert len(hook.stored) == DONE
    keys = [r["key"] for r in hook.posts()]
    assert len(keys) == DONE + 2 and all(keys)
    rows = deliveries(ws, run_id)
    assert sorted(r["receiver_id"] for r in rows) == sorted(hook.stored)
    assert {r["idempotency_key"] for r in rows} == set(keys)
    assert_verified(ws, run_id)


def test_kill_9_between_post_and_commit_repeats_one_request_with_the_same_key(
    ws: Workspace, hook: FakeHook
) -> None:
    hook.hold(HELD)
    proc = ws.spawn("run", "in", "--deliver-to", hook.url)
    wait_until(lambda: bool(hook.posts(HELD)), proc)
    proc.popen.send_signal(signal.SIGKILL)  # the receiver has it; the commit never came
    assert proc.wait(30) == -signal.SIGKILL
    hook.release()
    run_id = ws.run_ids()[0]
    resumed = ws.cli("resume", run_id)
    assert resumed.popen.returncode == FAILED, resumed.describe()

    held = hook.posts(HELD)
    assert len(held) == 2 and held[0]["key"] == held[1]["key"]
    by_key: dict[str, set[str]] = {}
    for request in hook.posts():
        by_key.setdefault(request["key"], set()).add(request["json"]["path"])
    assert len(by_key) == DONE and all(len(paths) == 1 for paths in by_key.values())
    assert len(hook.stored) == DONE  # the repeat was answered 409: stored once
    rows = deliveries(ws, run_id)
    assert len(rows) == DONE
    assert_verified(ws, run_id)


def test_a_4xx_fails_that_documents_delivery_with_the_receivers_message(
    ws: Workspace, hook: FakeHook
) -> None:
    hook.script("POST", status(422, "summary too short for our index"))
    proc = ws.cli("run", "in", "--deliver-to", hook.url, "--concurrency", "1")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    report = ws.status(run_id)
    assert report["documents"]["failed"] == 2 and report["documents"]["done"] == DONE - 1
    rejected = [f for f in report["failures"] if f["reason"] == "delivery_rejected"]
    assert len(rejected) == 1 and "summary too short for our index" in rejected[0]["error"]
    assert rejected[0]["step"] == "deliver"
    assert len(hook.stored) == DONE - 1
    assert_verified(ws, run_id)


def test_a_slow_receiver_is_retried_after_the_read_timeout(ws: Workspace, hook: FakeHook) -> None:
    hook.script("POST", status(201, delay=3.0))
    proc = ws.cli("run", "in", "--deliver-to", hook.url, "--read-timeout", "0.5")
    assert proc.popen.returncode == FAILED, proc.describe()
    assert len(hook.stored) == DONE
    assert_verified(ws, run_id_of(proc))


# -- cancel and compensate ----------------------------------------------------------------


def test_cancel_compensate_removes_exactly_what_was_delivered(
    ws: Workspace, hook: FakeHook
) -> None:
    proc = ws.cli("run", "in", "--deliver-to", hook.url)
    run_id = run_id_of(proc)
    again = ws.cli("deliver", run_id, "--to", "out")
    assert again.popen.returncode == 0, again.describe()
    assert len(files_under(ws.root / "out")) == DONE

    cancelled = ws.cli("cancel", run_id, "--compensate", "--json")
    assert cancelled.popen.returncode == 0, cancelled.describe()
    assert json.loads(cancelled.stdout)["deliveries"] == {"withdrawn": 2 * DONE}
    assert hook.stored == {}
    assert sorted(r["path"] for r in hook.deletes()) == sorted(
        f"/hook/{item}" for item in hook.keys.values()
    )
    assert files_under(ws.root / "out") == {}
    assert len(event_types(ws, "delivery_undone")) == 2 * DONE
    assert_verified(ws, run_id)
    cost = json.loads(ws.cli("cost", run_id, "--json").stdout)
    assert cost["status"] == "cancelled"
    assert cost["cancelled_work"]["calls"] == cost["total"]["calls"] > 0
    refused = ws.cli("resume", run_id)
    assert refused.popen.returncode == 2 and "was cancelled" in refused.stderr


def test_an_interrupted_compensation_resumes_where_it_stopped(
    ws: Workspace, hook: FakeHook
) -> None:
    run_id = run_id_of(ws.cli("run", "in", "--deliver-to", hook.url))
    latest_first = [r["receiver_id"] for r in reversed(deliveries(ws, run_id))]
    stuck = latest_first[3]
    hook.hold(f"/{stuck}")
    proc = ws.spawn("cancel", run_id, "--compensate")
    wait_until(lambda: any(r["path"].endswith(f"/{stuck}") for r in hook.deletes()), proc)
    proc.popen.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    hook.release()
    undone = [r for r in deliveries(ws, run_id) if r["status"] == "withdrawn"]
    assert sorted(r["receiver_id"] for r in undone) == sorted(latest_first[:3])

    again = ws.cli("cancel", run_id, "--compensate")
    assert again.popen.returncode == 0, again.describe()
    paths = [r["path"] for r in hook.deletes()]
    assert paths.count(f"/hook/{stuck}") == 2  # the undo cut off is made again (404: gone)
    assert all(paths.count(f"/hook/{item}") == 1 for item in latest_first if item != stuck)
    assert hook.stored == {}
    assert_verified(ws, run_id)


def test_cancel_tells_a_live_run_to_drain(ws: Workspace, hook: FakeHook) -> None:
    hook.hold(HELD)
    proc = ws.spawn("run", "in", "--deliver-to", hook.url, "--grace", "1")
    wait_until(lambda: bool(hook.posts(HELD)), proc)
    run_id = ws.run_ids()[0]
    cancelled = ws.cli("cancel", run_id)
    assert cancelled.popen.returncode == 0, cancelled.describe()
    assert proc.wait(30) == CANCELLED, proc.describe()  # not 75: it is never resumed
    assert "was cancelled and is not resumed" in proc.stderr
    assert ws.status(run_id)["status"] == "cancelled"
    assert_verified(ws, run_id)


# -- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("run", "in", "--deliver-to", "ftp://x/y"), "must be a folder or an http"),
        (("run", "in", "--deliver-to", "https://u:p@host/h"), "user name or password"),
        (("run", "in", "--on-failure", "maybe"), "keep or compensate"),
        (("cancel", "nope"), "no run 'nope'"),
        (("deliver", "nope", "--to", "out"), "no run 'nope'"),
    ],
)
def test_usage_errors_say_what_to_do(ws: Workspace, args: tuple[str, ...], words: str) -> None:
    ws.cli("run", "in")  # the database exists
    proc = ws.cli(*args)
    assert proc.popen.returncode == 2, proc.describe()
    assert words in proc.stderr and "Traceback" not in proc.stderr


# -- defects found in review ------------------------------------------------------------


def test_a_second_run_over_the_same_files_delivers_again(ws: Workspace, hook: FakeHook) -> None:
    """The cache answers model steps only: a delivery is a side effect of each run."""
    for folder in ("out1", "out2"):
        proc = ws.cli("run", "in", "--deliver-to", folder)
        assert proc.popen.returncode == FAILED, proc.describe()
        assert len(files_under(ws.root / folder)) == DONE
    first = ws.cli("run", "in", "--deliver-to", hook.url)
    assert first.popen.returncode == FAILED, first.describe()
    assert len(hook.posts()) == DONE
    second = ws.cli("run", "in", "--deliver-to", hook.url)
    assert second.popen.returncode == FAILED, second.describe()
    assert len(hook.posts()) == 2 * DONE and len(hook.stored) == 2 * DONE
    cached = query(ws.db, "SELECT COUNT(*) FROM steps WHERE step = 'deliver'"
                   " AND (cached_from IS NOT NULL OR cache_key IS NOT NULL)")  # fmt: skip
    assert cached[0][0] == 0
    assert_verified(ws, run_id_of(second))
