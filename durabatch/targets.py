"""Where results go: a folder or a webhook, and how each delivery is undone.

A target ``publish``-es one document's result and ``withdraw``-s it again, and
both are safe to repeat, because a crash between a side effect and its
checkpoint makes the next session do it again:

- a folder gets one file per document, written under a temporary name, fsynced
  and renamed into place (a reader never sees half a file). A file already
  holding exactly these bytes was written by an earlier attempt and is kept; a
  file with other bytes is never overwritten, since its undo could not bring
  it back. Withdrawing removes the file only if it still holds what was written.
- a webhook gets a POST with an ``Idempotency-Key`` that the same document and
  content always get again, so the receiver recognises a repeated call; 2xx and
  409 ("already have it") are success, 5xx, 429 and timeouts are retried under
  the model calls' policy, another 4xx fails the document's delivery. Withdrawing
  sends DELETE (404 and 410 mean it is gone already).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Protocol, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from durabatch.errors import (
    DocumentError,
    HaltError,
    Reason,
    RetryableError,
    TargetUnavailable,
    UsageError,
)
from durabatch.models.retry import RetryPolicy, retry_after
from durabatch.store.records import Delivered, Delivery, DeliveryStatus

USER_AGENT = "durabatch"
MAX_MESSAGE = 300
GONE = (404, 410)  # a withdrawal finds nothing to remove: it is withdrawn
T = TypeVar("T")


class Target(Protocol):
    kind: str
    spec: str

    def publish(self, name: str, body: bytes, key: str) -> Delivered: ...
    def withdraw(self, delivery: Delivery) -> tuple[DeliveryStatus, str]: ...
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
        """``in/a.pdf`` -> ROOT/in/a.pdf.json; never outside ROOT, whatever the name."""
        parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", ".")]
        parts = ["__" if p == ".." else p for p in parts] or ["document"]
        return self.root.joinpath(*parts[:-1], parts[-1] + ".json")

    def publish(self, name: str, body: bytes, key: str) -> Delivered:
        path = self.path_for(name)
        digest = sha256_of(body)
        try:
            if not _holds(path, digest):
                _write_new(path, body)
        except OSError as exc:
            raise HaltError(
                f"cannot write to the delivery folder {self.root}: {exc.strerror or exc}; "
                "fix its permissions or free disk space, then `durabatch resume`"
            ) from exc
        return Delivered(self.spec, self.kind, str(path), digest, key)

    def withdraw(self, delivery: Delivery) -> tuple[DeliveryStatus, str]:
        path = Path(delivery.location)
        try:
            if not path.exists():
                return DeliveryStatus.WITHDRAWN, "already gone"
            if sha256_of(path.read_bytes()) != delivery.sha256:
                return DeliveryStatus.LEFT, "changed since it was delivered: left in place"
            path.unlink()
            _fsync_dir(path.parent)
        except OSError as exc:
            raise HaltError(
                f"cannot remove {path}: {exc.strerror or exc}; fix the folder's permissions, "
                "then run the same command again"
            ) from exc
        return DeliveryStatus.WITHDRAWN, "file removed"

    def close(self) -> None:
        pass


def _holds(path: Path, digest: str) -> bool:
    """Does the file exist with exactly these bytes? Other bytes are never replaced."""
    if not path.exists():
        return False
    if sha256_of(path.read_bytes()) == digest:
        return True
    raise DocumentError(
        Reason.TARGET_EXISTS,
        f"{path} already exists with other content; durabatch never replaces a file it "
        "did not write (its undo could not restore it): move it away or deliver to "
        "another folder, then `durabatch deliver RUN_ID --to FOLDER`",
    )


def _write_new(path: Path, body: bytes) -> None:
    """Temporary name, fsync, rename, fsync the folder: whole or absent, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # one fixed temporary name per file: a crash leaves at most one, the next attempt reuses it
    temporary = path.with_name(f".{path.name}.durabatch-tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def publish(self, name: str, body: bytes, key: str) -> Delivered:
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}

        def attempt(number: int) -> Delivered:
            reply = self._send("POST", self.spec, headers, body)
            if reply.is_success or reply.status_code == 409:
                return Delivered(self.spec, self.kind, self.spec, sha256_of(body), key,
                                 _receiver_id(reply), reply.status_code)  # fmt: skip
            raise DocumentError(Reason.DELIVERY_REJECTED, _refusal(self.spec, reply))

        return self._retried(attempt, f"delivering {name}")

    def withdraw(self, delivery: Delivery) -> tuple[DeliveryStatus, str]:
        url = self.undo_url(delivery)
        headers = {"Idempotency-Key": delivery.key}

        def attempt(number: int) -> tuple[DeliveryStatus, str]:
            reply = self._send("DELETE", url, headers, None)
            if reply.is_success or reply.status_code in GONE:
                return DeliveryStatus.WITHDRAWN, f"DELETE {url}: {reply.status_code}"
            return DeliveryStatus.UNDO_FAILED, _refusal(url, reply, "DELETE ")

        return self._retried(attempt, f"withdrawing {delivery.location}")

    def undo_url(self, delivery: Delivery) -> str:
        """--compensate-url with {id} and {key} filled in; else the webhook's URL, plus
        /ID when the receiver answered with an id."""
        rid = quote(delivery.receiver_id or "", safe="")
        if self.compensate_url:
            return self.compensate_url.replace("{id}", rid).replace("{key}", delivery.key)
        return f"{delivery.location.rstrip('/')}/{rid}" if rid else delivery.location

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
    if isinstance(data, dict) and isinstance(data.get("id"), str | int):
        return str(data["id"])
    location = reply.headers.get("location")
    return location.rstrip("/").rsplit("/", 1)[-1] if location else None


def _refusal(url: str, reply: httpx.Response, method: str = "") -> str:
    text = " ".join(reply.text.split())[:MAX_MESSAGE] or reply.reason_phrase
    return f"{method}{url} answered {reply.status_code}: {text}"
