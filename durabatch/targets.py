"""Where results go: a folder or a webhook, and how each delivery is undone.

A target ``plan``-s a delivery (where it goes, its hash and key, the folders it will
create: all written down as ``delivering`` before anything happens), ``publish``-es it
and ``withdraw``-s it again. Both are safe to repeat, because a crash between a side
effect and its checkpoint makes the next session do it again:

- a folder gets one file per document, written to a private temporary file of its
  own, fsynced and hard-linked to its name, which fails if the name is taken (a
  reader never sees half a file; two writers never share a temporary file). A file
  already holding exactly these bytes was written by an earlier attempt and is kept;
  a file with other bytes is never overwritten, since its undo could not bring it
  back. A file name the file system refuses (too long, a folder in the way) fails
  that document; a folder that cannot be written (permissions, space) halts the run,
  and so does a file where the folder should be (its delivery ``refused``). A
  document's path is escaped so that no two share a file (``Folder.path_for``).
  Withdrawing removes the file only if it still holds what was written, then the
  folders the delivery created, if they are empty.
- a webhook gets a POST with an ``Idempotency-Key`` that the same document and
  content always get again, so the receiver recognises a repeated call; 2xx and
  409 ("already have it") are success, 5xx, 429 and timeouts are retried under
  the model calls' policy (a drain stops the retries: the step runs again on
  resume), 401/403/404/405 halt the run (the URL or credentials are wrong for every
  document), another 4xx fails the document's delivery. Withdrawing sends DELETE to
  a URL naming the one delivery (404 and 410 mean it is gone already), with an
  Idempotency-Key of its own; with no such URL the undo is ``undo_failed`` and says
  which ``--compensate-url`` to give.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from durabatch.artifacts import fsync_dir
from durabatch.errors import (
    Cancelled,
    DeliveryHalt,
    DocumentError,
    HaltError,
    Reason,
    RetryableError,
    TargetHalt,
    TargetUnavailable,
    UsageError,
)
from durabatch.models.retry import RetryPolicy, retry_after
from durabatch.store.records import Delivered, Delivery, DeliveryStatus

USER_AGENT = "durabatch"
MAX_MESSAGE = 300
GONE = (404, 410)  # DELETE of a URL naming one item finds nothing: it is withdrawn
# a POST answered so would fail for every document: the URL or the credentials are wrong
WRONG_ENDPOINT = (401, 403, 404, 405)
# errors of the folder itself (permissions, space): every document would fail the same way
FOLDER_HALTS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT,
                          errno.EIO})  # fmt: skip
# errors of one document's file name or of what is in its way: that document fails
NAME_PROBLEMS = {
    errno.ENAMETOOLONG: "the file name is too long for this file system",
    errno.EISDIR: "a folder is in the way",
    errno.ENOTDIR: "a file is in the way of one of its folders",
    errno.EEXIST: "something else is in the way",
    errno.ELOOP: "a symbolic link loop is in the way",
    errno.EINVAL: "the file system does not accept this file name",
    errno.EILSEQ: "the file system does not accept this file name's characters",
}
# a document's path in a folder: ``\\`` and a ``%`` that reads as an escape are escaped,
# and absolute paths go under a folder of their own, so two paths never share a file
_ESCAPED = re.compile(r"\\|%(?=[0-9A-Fa-f]{2})")
ABSOLUTE = "%2F"
T = TypeVar("T")


class Target(Protocol):
    kind: str
    spec: str

    def plan(self, name: str, body: bytes, key: str) -> Delivered: ...
    def publish(self, planned: Delivered, body: bytes,
                ours: frozenset[str] = frozenset()) -> Delivered: ...  # fmt: skip
    def withdraw(self, delivery: Delivery,
                 template: str | None = None) -> tuple[DeliveryStatus, str]: ...  # fmt: skip
    def close(self) -> None: ...


def is_webhook(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def check_spec(spec: str, option: str = "--deliver-to") -> None:
    """A usage error for a target that can never work, before any run starts."""
    if is_webhook(spec):
        parts = urlsplit(spec)
        if not parts.netloc:
            raise UsageError(f"{option} {spec!r} has no host; give e.g. https://host/hook")
        if "@" in parts.netloc:
            raise UsageError(
                f"{option} carries a user name or password, which would be stored with the "
                "run; give the URL without it"
            )
    elif "://" in spec:
        raise UsageError(f"{option} must be a folder or an http:// or https:// URL, not {spec!r}")
    elif not spec.strip():
        raise UsageError(f"{option} needs a folder or a URL")


def open_target(spec: str, cwd: Path, policy: RetryPolicy, timeouts: tuple[float, float],
                compensate_url: str | None = None) -> Target:  # fmt: skip
    """The target ``spec`` names: a URL is a webhook, anything else a folder (relative
    to ``cwd``, the run's working folder)."""
    check_spec(spec)
    if is_webhook(spec):
        return Webhook(spec, policy, timeouts, compensate_url)
    root = (cwd / spec).resolve()
    return Folder(str(root), root)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Folder:
    kind = "folder"

    def __init__(self, spec: str, root: Path) -> None:
        self.spec = spec
        self.root = root

    def path_for(self, name: str) -> Path:
        """``in/a.pdf`` -> ROOT/in/a.pdf.json; never outside ROOT, and no two document
        paths share a file, whatever the names.

        ``..`` becomes ``...``, and a real name of only dots gets one dot more; a ``\\``
        is written ``%5C`` (it is no folder), and a ``%`` that would read as such an
        escape ``%25``; an absolute path goes under the folder ``%2F`` (its ``/``), which
        no relative path's first folder can be written as."""
        parts = [_escaped(p) for p in name.split("/") if p not in ("", ".")]
        parts = [p + "." if set(p) == {"."} else p for p in parts] or ["document"]
        if name.startswith("/"):
            parts.insert(0, ABSOLUTE)
        return self.root.joinpath(*parts[:-1], parts[-1] + ".json")

    def plan(self, name: str, body: bytes, key: str) -> Delivered:
        """Where the file goes, and the folders it will create (known before writing)."""
        path = self.path_for(name)
        try:
            missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()
                       and (d == self.root or self.root in d.parents)]  # fmt: skip
        except OSError as exc:
            raise _folder_error(self.root, path, exc) from exc
        made = tuple(str(d) for d in missing)  # deepest first: the order they are removed in
        return Delivered(self.spec, self.kind, str(path), sha256_of(body), key, made_dirs=made)

    def publish(self, planned: Delivered, body: bytes,
                ours: frozenset[str] = frozenset()) -> Delivered:  # fmt: skip
        """``ours``: hashes of this document's earlier deliveries here; a file holding one
        (a write cut off before its checkpoint, then the source changed) is replaced."""
        path = Path(planned.location)
        try:
            if not _holds(path, planned.sha256, ours):
                _write_new(path, body, planned.sha256, ours)
        except OSError as exc:
            raise _folder_error(self.root, path, exc) from exc
        return planned

    def withdraw(self, delivery: Delivery,
                 template: str | None = None) -> tuple[DeliveryStatus, str]:  # fmt: skip
        path = Path(delivery.location)
        try:
            if not path.exists():
                status, text = DeliveryStatus.WITHDRAWN, "already gone"
            elif sha256_of(path.read_bytes()) != delivery.sha256:
                return DeliveryStatus.LEFT, "changed since it was delivered: left in place"
            else:
                path.unlink()
                fsync_dir(path.parent)
                status, text = DeliveryStatus.WITHDRAWN, "file removed"
        except OSError as exc:
            if exc.errno in FOLDER_HALTS:
                raise HaltError(
                    f"cannot remove {path}: {exc.strerror or exc}; fix the folder's "
                    "permissions, then run the same command again"
                ) from exc
            return DeliveryStatus.UNDO_FAILED, f"cannot remove {path}: {exc.strerror or exc}"
        remove_empty(delivery.made_dirs)
        return status, text

    def close(self) -> None:
        pass


def _escaped(part: str) -> str:
    """``\\`` as ``%5C``, and ``%`` as ``%25`` where it would read as such an escape
    (before two hex digits): other names, ``100%.txt`` too, keep their own spelling."""
    return _ESCAPED.sub(lambda found: "%5C" if found.group() == "\\" else "%25", part)


def remove_empty(folders: Iterable[str]) -> None:
    """Remove folders a delivery created, deepest first, those that are empty now."""
    for folder in sorted(folders, key=lambda f: f.count(os.sep), reverse=True):
        with contextlib.suppress(OSError):  # not empty (someone else's file), or gone
            os.rmdir(folder)


def _folder_error(root: Path, path: Path, exc: OSError) -> Exception:
    """A problem of this document's file is its own failure; one of the folder halts."""
    problem = NAME_PROBLEMS.get(exc.errno or 0)
    if problem is None or exc.errno in FOLDER_HALTS:
        return TargetHalt(
            f"cannot write to the delivery folder {path.parent}: {exc.strerror or exc}; fix "
            "its permissions or free disk space"
        )
    if not os.path.isdir(root):  # a file in the folder's place or way: nothing written
        return DeliveryHalt(
            f"cannot deliver to {root}: it is not a folder and cannot be made one "
            f"({exc.strerror or exc}): a file is in its place or in its way; move that "
            "file away"
        )
    return DocumentError(
        Reason.TARGET_PATH,
        f"cannot write {path}: {problem} ({exc.strerror or exc}); move what is in the way "
        "or rename the document, or deliver the run to another folder: "
        "`durabatch deliver RUN_ID --to FOLDER`",
    )


def _holds(path: Path, digest: str, ours: frozenset[str] = frozenset()) -> bool:
    """Does the file exist with exactly these bytes? Other bytes are never replaced,
    except those of an earlier delivery of the same document (``ours``): False."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    found = sha256_of(data)
    if found == digest:
        return True
    if found in ours:
        return False
    raise DocumentError(
        Reason.TARGET_EXISTS,
        f"{path} already exists with other content; durabatch never replaces a file it "
        "did not write (its undo could not restore it): move it away or deliver to "
        "another folder, then `durabatch deliver RUN_ID --to FOLDER`",
    )


def _write_new(path: Path, body: bytes, digest: str, ours: frozenset[str] = frozenset()) -> None:
    """A private temporary file of its own, fsynced, then linked to the file's name, which
    fails if the name is taken: whole or absent, never half, never replacing a file but
    one of this document's earlier deliveries (``ours``), renamed over at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".durabatch-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:  # another writer got there first: the same bytes are fine
            if not _holds(path, digest, ours):
                os.replace(temporary, path)  # our own earlier file: replaced whole
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    fsync_dir(path.parent)


def undo_key(key: str) -> str:
    """The withdrawal's own Idempotency-Key: the POST's would make a receiver that
    remembers keys (Stripe-style middleware) replay the POST's answer, not delete."""
    return hashlib.sha256(f"{key}:withdraw".encode()).hexdigest()[:32]


class Webhook:
    kind = "webhook"

    def __init__(self, url: str, policy: RetryPolicy, timeouts: tuple[float, float],
                 compensate_url: str | None = None) -> None:  # fmt: skip
        self.spec = url
        self.policy = policy
        self.compensate_url = compensate_url
        connect, read = timeouts
        self.client = httpx.Client(
            timeout=httpx.Timeout(read, connect=connect), headers={"User-Agent": USER_AGENT}
        )

    def plan(self, name: str, body: bytes, key: str) -> Delivered:
        return Delivered(self.spec, self.kind, self.spec, sha256_of(body), key,
                         compensate_url=self.compensate_url)  # fmt: skip

    def publish(self, planned: Delivered, body: bytes,
                ours: frozenset[str] = frozenset()) -> Delivered:  # fmt: skip
        headers = {"Idempotency-Key": planned.key, "Content-Type": "application/json"}

        def attempt(number: int) -> Delivered:
            if number > 1 and self.policy.cancelled():  # a drain began in the wait
                raise Cancelled("the run is stopping; the delivery was not tried again")
            reply = self._send("POST", self.spec, headers, body)
            if reply.is_success or reply.status_code == 409:
                return replace(planned, receiver_id=_receiver_id(reply),
                               http_status=reply.status_code)  # fmt: skip
            if reply.status_code in WRONG_ENDPOINT:
                raise DeliveryHalt(
                    f"{_refusal(self.spec, reply, 'POST ')}: every document's delivery would "
                    "fail; check the webhook URL and the receiver's credentials"
                )
            raise DocumentError(Reason.DELIVERY_REJECTED, _refusal(self.spec, reply))

        return self._retried(attempt, f"delivering {planned.location}")

    def withdraw(self, delivery: Delivery,
                 template: str | None = None) -> tuple[DeliveryStatus, str]:  # fmt: skip
        url, why = self.undo_url(delivery, template)
        if url is None:
            return DeliveryStatus.UNDO_FAILED, why
        headers = {"Idempotency-Key": undo_key(delivery.key)}

        def attempt(number: int) -> tuple[DeliveryStatus, str]:
            if number > 1 and self.policy.cancelled():
                raise Cancelled("stopping; the withdrawal was not tried again")
            reply = self._send("DELETE", url, headers, None)
            if reply.is_success or reply.status_code in GONE:
                return DeliveryStatus.WITHDRAWN, f"DELETE {url}: {reply.status_code}"
            return DeliveryStatus.UNDO_FAILED, _refusal(url, reply, "DELETE ")

        return self._retried(attempt, f"withdrawing {delivery.location}")

    def undo_url(self, delivery: Delivery, fallback: str | None = None) -> tuple[str | None, str]:
        """The URL naming this one delivery at the receiver: the delivery's own
        --compensate-url (else ``fallback``) with {id} and {key} filled in, else the
        webhook's URL plus /ID when the receiver answered with an id. Never the URL that
        was posted to: a DELETE there names the whole collection, and its 404 proves
        nothing. None (with why) when no such URL is known."""
        template = delivery.compensate_url or fallback
        rid = quote(delivery.receiver_id or "", safe="")
        if template and (rid or "{id}" not in template):
            return template.replace("{id}", rid).replace("{key}", delivery.key), ""
        if not template and rid:
            return f"{delivery.location.rstrip('/')}/{rid}", ""
        maybe = (" (the process stopped before the receiver answered, so it may hold it)"
                 if delivery.status == DeliveryStatus.DELIVERING else "")  # fmt: skip
        return None, (
            f"{delivery.location} gave no id for this delivery{maybe}, so there is no URL "
            "naming it to DELETE; give the receiver's delete URL with {key} (the delivery's "
            f"Idempotency-Key): `durabatch cancel {delivery.run_id} --compensate "
            f"--compensate-url '{delivery.location.rstrip('/')}/{{key}}'`"
        )

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: bytes | None) -> httpx.Response:  # fmt: skip
        try:
            reply = self.client.request(method, url, headers=headers, content=body)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{method} {url}: no answer in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{method} {url}: {exc}") from exc
        if reply.status_code >= 500 or reply.status_code in (408, 429):
            raise RetryableError(
                f"{method} {url}: {reply.status_code} {reply.text[:MAX_MESSAGE]}",
                retry_after(reply.headers),
            )
        return reply

    def _retried(self, attempt: Callable[[int], T], what: str) -> T:
        try:
            return self.policy.call(attempt)
        except RetryableError as exc:
            if self.policy.cancelled():  # a drain, not an outage: it runs again on resume
                raise Cancelled(f"{what}: stopped while retrying ({exc})") from exc
            raise TargetUnavailable(
                f"{what}: the webhook kept failing ({exc}); nothing is lost: run the same "
                "command again (for a run, `durabatch resume`) when it answers"
            ) from exc

    def close(self) -> None:
        self.client.close()


def _receiver_id(reply: httpx.Response) -> str | None:
    """The id the receiver gave the delivery: ``{"id": ...}`` in the body, or Location."""
    try:
        data = reply.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("id"), str | int) and str(data["id"]):
        return str(data["id"])
    location = reply.headers.get("location")
    return (location.rstrip("/").rsplit("/", 1)[-1] or None) if location else None


def _refusal(url: str, reply: httpx.Response, method: str = "") -> str:
    text = " ".join(reply.text.split())[:MAX_MESSAGE] or reply.reason_phrase
    return f"{method}{url} answered {reply.status_code}: {text}"
