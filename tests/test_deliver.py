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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from crashkit import SAMPLE_DOCS, Proc, Workspace, query
from fakehook import FakeHook, status, stored_late

from durabatch.errors import DocumentError, Reason
from durabatch.events import replay
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


def kill_during_the_held_post(ws: Workspace, hook: FakeHook, *extra: str) -> None:
    """A run delivering to ``hook`` is killed (kill -9) while the receiver holds the POST
    of ``HELD``; the receiver is then let go."""
    hook.hold(HELD)
    proc = ws.spawn("run", "in", "--deliver-to", hook.url, *extra)
    wait_until(lambda: bool(hook.posts(HELD)), proc)
    proc.popen.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    hook.release()


def kill_during_the_held_delete(ws: Workspace, hook: FakeHook, run_id: str, stuck: str) -> None:
    """``cancel --compensate`` of ``run_id`` is killed (kill -9) while the receiver holds
    the DELETE that withdraws its delivery ``stuck``; the receiver is then let go."""
    hook.hold(f"/{stuck}")
    proc = ws.spawn("cancel", run_id, "--compensate")
    wait_until(lambda: any(r["path"].endswith(f"/{stuck}") for r in hook.deletes()), proc)
    proc.popen.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    hook.release()


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
    assert [p.name for p in (ws.root / "out").iterdir()] == ["theirs.txt"]  # no empty in/
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
    kill_during_the_held_post(ws, hook)  # the receiver has it; the commit never came
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
    assert len(rows) == DONE and {r["status"] for r in rows} == {"delivered"}
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
    # the read timeout applies to every POST: wide enough that no prompt answer from a busy
    # receiver misses it, and the slow answer comes far past it (the receiver's teardown
    # ends that wait)
    hook.script("POST", stored_late(60.0))  # taken at once, answered after the timeout
    proc = ws.cli("run", "in", "--deliver-to", hook.url, "--read-timeout", "3",
                  "--concurrency", "1")  # fmt: skip
    assert proc.popen.returncode == FAILED, proc.describe()
    assert len(hook.stored) == DONE
    posts = hook.posts()
    assert len(posts) == DONE + 1 and posts[0]["key"] == posts[1]["key"]
    assert hook.answers[:2] == [201, 409]  # the repeat is recognised by its key
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
    assert not (ws.root / "out").exists()  # the folders the delivery created are gone too
    # the DELETE has a key of its own: the POST's would be answered with the POST's 201
    assert not {r["key"] for r in hook.deletes()} & {r["key"] for r in hook.posts()}
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
    # latest delivered first: with several documents in flight, the order deliveries were
    # noted in (their ids) is not always the order they were made in
    latest_first = [r["receiver_id"] for r in query(
        ws.db, "SELECT receiver_id FROM deliveries WHERE run_id = ?"
        " ORDER BY delivered_at DESC, id DESC", (run_id,))]  # fmt: skip
    stuck = latest_first[3]
    kill_during_the_held_delete(ws, hook, run_id, stuck)
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
    status = ws.status(run_id)
    assert status["status"] == "cancelled"
    # every document ends in a final state: what the run had not finished is skipped
    documents = status["documents"]
    assert documents["pending"] == documents["running"] == 0 and documents["skipped"] > 0
    records = ws.export(run_id).values()
    assert {r["reason"] for r in records if r["status"] == "skipped"} == {"cancelled"}
    # counted as skipped, not listed one by one (the damaged sample may be listed: failed)
    assert [f for f in status["failures"] if f["reason"] == "cancelled"] == []
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
        (("cancel", "nope", "--compensate-url", "http://h/{key}"), "only with --compensate"),
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


@pytest.mark.parametrize("stop", ["grace ends", "kill -9"])
def test_a_delivery_cut_off_before_its_checkpoint_is_still_withdrawn(
    ws: Workspace, hook: FakeHook, stop: str
) -> None:
    """The receiver holds one POST; the run stops before its answer (the grace ends, or
    kill -9). The delivery was written down before it was sent, so compensation undoes it."""
    hook.hold(HELD)
    by_key = f"{hook.url}/by-key/{{key}}"
    proc = ws.spawn("run", "in", "--deliver-to", hook.url, "--grace", "1",
                    "--compensate-url", by_key)  # fmt: skip
    wait_until(lambda: bool(hook.posts(HELD)), proc)
    if stop == "kill -9":
        proc.popen.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    else:
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.wait(30) == NOT_FINISHED, proc.describe()
    run_id = ws.run_ids()[0]
    by_key = {r["idempotency_key"]: r for r in deliveries(ws, run_id)}
    assert by_key[hook.posts(HELD)[0]["key"]]["status"] == "delivering"  # written down first

    cancelled = ws.cli("cancel", run_id, "--compensate")
    assert cancelled.popen.returncode == 0, cancelled.describe()
    assert hook.stored == {}
    assert {r["status"] for r in deliveries(ws, run_id)} == {"withdrawn"}
    assert_verified(ws, run_id)


def test_a_cancel_killed_mid_compensation_is_never_resumed(ws: Workspace, hook: FakeHook) -> None:
    run_id = run_id_of(ws.cli("run", "in", "--deliver-to", hook.url))
    stuck = [r["receiver_id"] for r in reversed(deliveries(ws, run_id))][2]
    kill_during_the_held_delete(ws, hook, run_id, stuck)
    assert ws.status(run_id)["status"] == "cancelled"
    cron = ws.cli("resume")  # cron's plain resume: the latest unfinished run
    assert cron.popen.returncode == 0, cron.describe()
    assert "nothing to resume" in cron.stderr
    named = ws.cli("resume", run_id)
    assert named.popen.returncode == 2 and "was cancelled" in named.stderr
    assert ws.status(run_id)["status"] == "cancelled"
    again = ws.cli("cancel", run_id, "--compensate")
    assert again.popen.returncode == 0, again.describe()
    assert hook.stored == {} and ws.status(run_id)["status"] == "cancelled"
    assert_verified(ws, run_id)


def test_a_receiver_without_ids_never_gets_delete_on_its_post_url(ws: Workspace) -> None:
    """No id, no --compensate-url: undo_failed, exit 1, until the URL is given; each
    retry of compensation tries the failed ones again."""
    with FakeHook(ids=False) as hook:
        run_id = run_id_of(ws.cli("run", "in", "--deliver-to", hook.url))
        first = ws.cli("cancel", run_id, "--compensate", "--json")
        assert first.popen.returncode == FAILED, first.describe()
        assert json.loads(first.stdout)["deliveries"] == {"undo_failed": DONE}
        assert "--compensate-url" in first.stderr and "{key}" in first.stderr
        assert hook.deletes() == [] and len(hook.stored) == DONE
        second = ws.cli("cancel", run_id, "--compensate")
        assert second.popen.returncode == FAILED, second.describe()
        given = ws.cli("cancel", run_id, "--compensate", "--compensate-url",
                       f"{hook.url}/by-key/{{key}}")  # fmt: skip
        assert given.popen.returncode == 0, given.describe()
        assert hook.stored == {}
        assert len(hook.deletes()) == DONE
        assert not {r["key"] for r in hook.deletes()} & {r["key"] for r in hook.posts()}
    assert {r["status"] for r in deliveries(ws, run_id)} == {"withdrawn"}
    assert_verified(ws, run_id)


def test_an_id_template_without_an_id_names_nothing() -> None:
    from durabatch.models.retry import RetryPolicy
    from durabatch.targets import Webhook

    hook = Webhook("http://127.0.0.1:9/hook", RetryPolicy(), (1.0, 1.0))
    try:
        made = Delivery("http://127.0.0.1:9/hook", "webhook", "http://127.0.0.1:9/hook", "s",
                        "k", compensate_url="http://127.0.0.1:9/hook/{id}", run_id="r")  # fmt: skip
        assert hook.withdraw(made)[0] == "undo_failed"  # no request: port 9 is never asked
        url, _ = hook.undo_url(replace(made, compensate_url="http://127.0.0.1:9/x/{key}"))
        assert url == "http://127.0.0.1:9/x/k"
    finally:
        hook.close()


def test_a_redelivery_is_withdrawn_by_its_own_url(ws: Workspace, hook: FakeHook) -> None:
    """--compensate-url belongs to the deliveries made with it, not to every webhook."""
    with FakeHook() as other:
        run_id = run_id_of(ws.cli("run", "in", "--deliver-to", hook.url,
                                  "--compensate-url", f"{hook.url}/by-key/{{key}}"))  # fmt: skip
        again = ws.cli("deliver", run_id, "--to", other.url)
        assert again.popen.returncode == 0, again.describe()
        cancelled = ws.cli("cancel", run_id, "--compensate")
        assert cancelled.popen.returncode == 0, cancelled.describe()
        assert hook.stored == {} and other.stored == {}
        assert all("/by-key/" in r["path"] for r in hook.deletes())
        assert sorted(r["path"] for r in other.deletes()) == sorted(
            f"/hook/{item}" for item in other.keys.values())  # fmt: skip
    assert_verified(ws, run_id)


def test_a_file_name_too_long_fails_that_document_only(ws: Workspace) -> None:
    legal = "a" * 232 + ".txt"  # 236 bytes: its .json (241) is a legal name
    too_long = "b" * 251 + ".txt"  # 255 bytes: its .json is not
    for name in (legal, too_long):
        (ws.root / "in" / name).write_text("Ada Lovelace met Charles Babbage in London.\n" * 5)
    proc = ws.cli("run", "in", "--deliver-to", "out")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    out = files_under(ws.root / "out")
    assert len(out) == DONE + 1 and f"in/{legal}.json" in out
    failures = {f["path"]: f for f in ws.status(run_id)["failures"]}
    assert failures[f"in/{too_long}"]["reason"] == "target_path"
    assert "too long" in failures[f"in/{too_long}"]["error"]
    assert_verified(ws, run_id)


def test_folders_made_for_a_refused_delivery_are_removed_by_compensation(
    ws: Workspace,
) -> None:
    """The file name is refused after its folder was made (a retry finds it there): the
    folder is still the run's, and compensation removes it with the others."""
    (ws.root / "in" / "deep").mkdir()
    too_long = "b" * 251 + ".txt"
    (ws.root / "in" / "deep" / too_long).write_text("Ada Lovelace met Babbage.\n" * 5)
    proc = ws.cli("run", "in", "--deliver-to", "out")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    assert (ws.root / "out" / "in" / "deep").is_dir()
    refused = [r for r in deliveries(ws, run_id) if r["status"] == "refused"]
    assert len(refused) == 1 and str(ws.root / "out" / "in" / "deep") in refused[0]["made_dirs"]
    undone = ws.cli("cancel", run_id, "--compensate")
    assert undone.popen.returncode == 0, undone.describe()
    assert not (ws.root / "out").exists()  # every folder the run made, the refused one's too
    assert_verified(ws, run_id)


@pytest.mark.parametrize("code", [401, 403, 404, 405])
def test_a_post_refused_for_every_document_halts_the_run(
    ws: Workspace, hook: FakeHook, code: int
) -> None:
    hook.script("POST", status(code, "no such hook or not yours"))
    proc = ws.cli("run", "in", "--deliver-to", hook.url, "--concurrency", "1")
    assert proc.popen.returncode == HALTED, proc.describe()
    assert "every document's delivery would fail" in proc.stderr
    assert "Traceback" not in proc.stderr
    run_id = run_id_of(proc)
    report = ws.status(run_id)
    assert report["status"] == "halted" and report["documents"]["failed"] == 1  # the bad PDF
    rows = deliveries(ws, run_id)
    assert [r["status"] for r in rows] == ["refused"]  # answered, not accepted: nothing to undo
    assert str(code) in rows[0]["undo"]
    assert_verified(ws, run_id)
    cancelled = ws.cli("cancel", run_id, "--compensate")
    assert cancelled.popen.returncode == 0, cancelled.describe()
    assert hook.deletes() == [] and [r["status"] for r in deliveries(ws, run_id)] == ["refused"]
    assert_verified(ws, run_id)


def test_a_drain_while_the_webhook_is_retried_is_an_interruption(
    ws: Workspace, hook: FakeHook
) -> None:
    hook.script("POST", *[status(503)] * 500)
    env = {"DURABATCH_RETRY_ATTEMPTS": "1000", "DURABATCH_RETRY_SECONDS": "3600"}
    proc = ws.spawn("run", "in", "--deliver-to", hook.url, env=env)
    wait_until(lambda: bool(hook.posts()), proc)
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait(60) == NOT_FINISHED, proc.describe()
    run_id = ws.run_ids()[0]
    assert ws.status(run_id)["status"] == "interrupted"  # not paused: nobody is down
    assert "kept failing" not in proc.stderr
    assert_verified(ws, run_id)


def test_two_writers_of_one_file_never_share_or_replace_it(tmp_path: Path) -> None:
    for round_ in range(30):
        folder = Folder(str(tmp_path / str(round_)), tmp_path / str(round_))
        won, refused = race(folder, [b'{"writer": 1}\n', b'{"writer": 2}\n'])
        assert len(won) == 1 and refused == [Reason.TARGET_EXISTS]
        assert files_under(folder.root) == {"in/a.txt.json": won[0]}  # no temporary left


def race(folder: Folder, bodies: list[bytes]) -> tuple[list[bytes], list[Reason]]:
    """Each body published to the same name by its own thread, at once."""
    won: list[bytes] = []
    refused: list[Reason] = []
    start = threading.Barrier(len(bodies))

    def write(body: bytes) -> None:
        start.wait()
        try:
            publish(folder, "in/a.txt", body, "k")
            won.append(body)
        except DocumentError as exc:
            refused.append(exc.reason)

    threads = [threading.Thread(target=write, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, refused


def test_compaction_keeps_a_run_with_deliveries_verified(ws: Workspace) -> None:
    run_id = run_id_of(ws.cli("run", "in", "--deliver-to", "out", "--on-failure", "compensate"))
    compacted = ws.cli("compact", run_id)
    assert compacted.popen.returncode == 0, compacted.describe()
    assert_verified(ws, run_id)
    assert not (ws.root / "out").exists()  # the folder it created is gone with the files


def test_a_delivery_folder_among_the_inputs_is_not_processed(ws: Workspace) -> None:
    (ws.root / "in" / "out").mkdir()
    (ws.root / "in" / "out" / "old.json.txt").write_text("a result of an earlier run\n")
    proc = ws.cli("run", "in", "--deliver-to", "in/out")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    assert not any(path.startswith("in/out/") for path in ws.export(run_id))
    assert ws.status(run_id)["documents"]["total"] == DONE + 1


# -- the second review ----------------------------------------------------------------------


def test_a_changed_file_after_a_cut_off_post_leaves_both_copies_undoable(
    ws: Workspace, hook: FakeHook
) -> None:
    """POST under K1 cut off by kill -9, the file edited, resume: a POST under K2 of the
    new content. Both are rows of their own; cancel --compensate withdraws both."""
    kill_during_the_held_post(ws, hook, "--compensate-url", f"{hook.url}/by-key/{{key}}")
    with (ws.root / "in" / "kestrel_roadmap_meeting.md").open("a") as source:
        source.write("\nA late addendum: the roadmap slips a quarter.\n")
    run_id = ws.run_ids()[0]
    resumed = ws.cli("resume", run_id)
    assert resumed.popen.returncode == FAILED, resumed.describe()
    held = hook.posts(HELD)
    assert len(held) == 2 and held[0]["key"] != held[1]["key"]
    rows = [r for r in deliveries(ws, run_id) if r["idempotency_key"] in
            {held[0]["key"], held[1]["key"]}]  # fmt: skip
    assert [r["status"] for r in rows] == ["delivering", "delivered"]
    assert len(hook.stored) == DONE + 1  # the receiver holds both copies
    assert_verified(ws, run_id)

    cancelled = ws.cli("cancel", run_id, "--compensate")
    assert cancelled.popen.returncode == 0, cancelled.describe()
    assert hook.stored == {}
    assert {r["status"] for r in deliveries(ws, run_id)} == {"withdrawn"}
    assert_verified(ws, run_id)


def test_a_file_of_an_earlier_delivery_of_the_document_is_ours_to_replace(
    tmp_path: Path,
) -> None:
    """The folder variant: a write cut off before its checkpoint left the old content's
    file; the new content replaces it (its hash is an earlier row's), anyone else's file
    is still never replaced."""
    folder = Folder(str(tmp_path / "out"), tmp_path / "out")
    old, new = b'{"v": 1}\n', b'{"v": 2}\n'
    first = publish(folder, "in/a.txt", old, "k1")
    with pytest.raises(DocumentError) as refused:
        publish(folder, "in/a.txt", new, "k2")
    assert refused.value.reason == Reason.TARGET_EXISTS
    planned = folder.plan("in/a.txt", new, "k2")
    folder.publish(planned, new, ours=frozenset({first.sha256}))
    assert files_under(folder.root) == {"in/a.txt.json": new}


def test_delivering_again_after_a_withdrawal_is_a_new_delivery(
    ws: Workspace, hook: FakeHook
) -> None:
    proc = ws.cli("run", "in", "--deliver-to", hook.url, "--on-failure", "compensate")
    assert proc.popen.returncode == FAILED, proc.describe()
    run_id = run_id_of(proc)
    assert hook.stored == {} and len(hook.deletes()) == DONE
    again = ws.cli("deliver", run_id, "--to", hook.url)
    assert again.popen.returncode == 0, again.describe()
    assert "8 delivered" in again.stdout
    assert len(hook.stored) == DONE  # new keys: the receiver takes them again
    first_keys = {r["key"] for r in hook.posts()[:DONE]}
    assert not first_keys & {r["key"] for r in hook.posts()[DONE:]}
    rows = deliveries(ws, run_id)
    assert sorted(r["generation"] for r in rows) == [0] * DONE + [1] * DONE
    cancelled = ws.cli("cancel", run_id, "--compensate")
    assert cancelled.popen.returncode == 0, cancelled.describe()
    assert hook.stored == {}  # a second withdrawal has keys of its own, not replayed
    deletes = [r["key"] for r in hook.deletes()]
    assert len(deletes) == 2 * DONE and len(set(deletes)) == 2 * DONE
    assert_verified(ws, run_id)


def test_a_killed_run_cancelled_and_killed_mid_undo_stays_cancelled(
    ws: Workspace, hook: FakeHook
) -> None:
    kill_during_the_held_post(ws, hook, "--compensate-url", f"{hook.url}/by-key/{{key}}")
    run_id = ws.run_ids()[0]
    hook.hold("/by-key/")  # every DELETE is recorded, then gets no answer
    cancel = ws.spawn("cancel", run_id, "--compensate")
    wait_until(lambda: bool(hook.deletes()), cancel)
    cancel.popen.send_signal(signal.SIGKILL)
    assert cancel.wait(30) == -signal.SIGKILL
    hook.release()
    assert ws.status(run_id)["status"] == "cancelled"
    again = ws.cli("cancel", run_id, "--compensate")
    assert again.popen.returncode == 0, again.describe()
    assert hook.stored == {} and ws.status(run_id)["status"] == "cancelled"
    assert_verified(ws, run_id)


def test_compaction_keeps_delivering_refused_and_a_cancel_request(
    ws: Workspace, hook: FakeHook
) -> None:
    """A refused re-delivery (401), one cut off by kill -9 (``delivering``), a cancel: all
    of it survives compaction, and the compensation after it verifies."""
    run_id = run_id_of(ws.cli("run", "in", "--deliver-to", hook.url))
    hook.script("POST", status(401, "not yours"))
    refused = ws.cli("deliver", run_id, "--to", f"{hook.url}/two")
    assert refused.popen.returncode == HALTED, refused.describe()
    hook.hold(HELD)
    cut = ws.spawn("deliver", run_id, "--to", f"{hook.url}/three", "--compensate-url",
                   f"{hook.url}/three/by-key/{{key}}")  # fmt: skip
    wait_until(lambda: bool(hook.posts(HELD)[1:]), cut)
    cut.popen.send_signal(signal.SIGKILL)
    assert cut.wait(30) == -signal.SIGKILL
    hook.release()
    assert {"delivering", "refused"} <= {r["status"] for r in deliveries(ws, run_id)}
    cancelled = ws.cli("cancel", run_id)
    assert cancelled.popen.returncode == 0, cancelled.describe()
    compacted = ws.cli("compact", run_id)
    assert compacted.popen.returncode == 0, compacted.describe()
    assert replay(ws.events()).run["cancel_requested"] is True
    assert_verified(ws, run_id)
    undone = ws.cli("cancel", run_id, "--compensate")
    assert undone.popen.returncode == 0, undone.describe()
    assert hook.stored == {}
    assert {r["status"] for r in deliveries(ws, run_id)} == {"withdrawn", "refused"}
    assert_verified(ws, run_id)


def test_a_cancel_during_a_redelivery_stops_it_and_the_run_stays_cancelled(
    ws: Workspace, hook: FakeHook
) -> None:
    run_id = run_id_of(ws.cli("run", "in", "--deliver-to", hook.url))
    hook.hold(HELD)
    redelivery = ws.spawn("deliver", run_id, "--to", f"{hook.url}/two")
    wait_until(lambda: bool(hook.posts(HELD)[1:]), redelivery)
    cancel = ws.spawn("cancel", run_id)

    def asked() -> bool:
        return bool(query(ws.db, "SELECT cancel_requested FROM runs WHERE id = ?",
                          (run_id,))[0][0])  # fmt: skip

    wait_until(asked, cancel)
    hook.release()  # the held POST is answered; the re-delivery looks before the next one
    assert redelivery.wait(60) == CANCELLED, redelivery.describe()
    assert "was cancelled" in redelivery.stderr and "Traceback" not in redelivery.stderr
    assert cancel.wait(60) == 0, cancel.describe()
    assert len(hook.posts()) < 2 * DONE  # it stopped: not every document went to /two
    assert ws.status(run_id)["status"] == "cancelled"
    again = ws.cli("deliver", run_id, "--to", f"{hook.url}/two")
    assert again.popen.returncode == 2 and "cancelled" in again.stderr
    assert_verified(ws, run_id)
