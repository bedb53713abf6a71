"""Spot and preemption notices: drain the run as soon as the cloud says it will take the machine.

A daemon thread polls the instance metadata every ``spot_interval`` seconds: AWS's
``spot/instance-action`` (with an IMDSv2 session token), GCP's ``instance/preempted``, or
any URL (200 = notice, 404 = none). A notice calls ``Engine.drain``, which only sets flags,
so the run ends exactly as after a SIGTERM: interrupted, exit 75, resumable. Not being able
to reach the endpoint is noted once per outage and never stops the run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Protocol

import httpx

DEFAULT_BASES = {"aws": "http://169.254.169.254", "gcp": "http://metadata.google.internal"}
KINDS = ("aws", "gcp")
# metadata servers answer in milliseconds; a slow one must not hold the watcher up
TIMEOUT_SECONDS = 2.0
AWS_TOKEN_TTL = 21600  # seconds, the most IMDSv2 allows
AWS_TOKEN_MARGIN = 60.0  # fetch a new token this long before the old one expires
BODY_CHARS = 200


class SpotError(Exception):
    """The endpoint answered something that is neither a notice nor 'no notice'."""


class Source(Protocol):
    url: str

    def poll(self, client: httpx.Client) -> str | None:
        """The notice, in words, or None; raises httpx.HTTPError or SpotError."""


def _unexpected(response: httpx.Response) -> SpotError:
    return SpotError(f"HTTP {response.status_code}: {_trimmed(response.text)}")


def _trimmed(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= BODY_CHARS else flat[:BODY_CHARS] + "..."


class AwsSource:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.url = f"{self.base}/latest/meta-data/spot/instance-action"
        self._token: str | None = None
        self._expires = 0.0

    def poll(self, client: httpx.Client) -> str | None:
        response = client.get(self.url, headers={"X-aws-ec2-metadata-token": self._fresh(client)})
        if response.status_code == 401:  # the token expired or the service restarted
            self._token = None
            response = client.get(
                self.url, headers={"X-aws-ec2-metadata-token": self._fresh(client)}
            )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _unexpected(response)
        try:
            notice = json.loads(response.text)
            return f"{notice['action']} at {notice['time']}"
        except (ValueError, KeyError, TypeError):  # still a notice: better drain than guess
            return _trimmed(response.text)

    def _fresh(self, client: httpx.Client) -> str:
        if self._token is None or time.monotonic() >= self._expires:
            response = client.put(
                f"{self.base}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(AWS_TOKEN_TTL)},
            )
            if response.status_code != 200 or not response.text.strip():
                raise _unexpected(response)
            self._token = response.text.strip()
            self._expires = time.monotonic() + AWS_TOKEN_TTL - AWS_TOKEN_MARGIN
        return self._token


class GcpSource:
    def __init__(self, base: str) -> None:
        self.url = f"{base.rstrip('/')}/computeMetadata/v1/instance/preempted"

    def poll(self, client: httpx.Client) -> str | None:
        response = client.get(self.url, headers={"Metadata-Flavor": "Google"})
        if response.status_code != 200:
            raise _unexpected(response)
        answer = response.text.strip().upper()
        if answer == "FALSE":
            return None
        if answer == "TRUE":
            return "preempted"
        raise _unexpected(response)


class UrlSource:
    def __init__(self, url: str) -> None:
        self.url = url

    def poll(self, client: httpx.Client) -> str | None:
        response = client.get(self.url)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _unexpected(response)
        return _trimmed(response.text) or "(empty body)"


def make_source(watch: str, base: str | None) -> Source:
    kind = watch.lower()
    if kind == "aws":
        return AwsSource(base or DEFAULT_BASES["aws"])
    if kind == "gcp":
        return GcpSource(base or DEFAULT_BASES["gcp"])
    return UrlSource(watch)


class SpotWatcher:
    """Polls ``source`` in a daemon thread; on the first notice, notes it and drains."""

    def __init__(
        self,
        source: Source,
        interval: float,
        drain: Callable[[str], None],
        note: Callable[[str], None],
    ) -> None:
        self.source = source
        self.interval = interval
        self._drain = drain
        self._note = note
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="spot-watch", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """The run is over: no more polls, notes or drains."""
        self._stop.set()
        # a finished run does not wait out a hung poll; the thread is a daemon
        self._thread.join(timeout=TIMEOUT_SECONDS)

    def _watch(self) -> None:
        # trust_env=False: an HTTP(S)_PROXY meant for the model API must not see these requests
        with httpx.Client(timeout=TIMEOUT_SECONDS, trust_env=False) as client:
            while not self._stop.is_set():
                if self._poll_once(client):
                    return
                self._stop.wait(self.interval)

    def _poll_once(self, client: httpx.Client) -> bool:
        """One look; True when the watch is over (a notice, or a bug in the watcher)."""
        try:
            notice = self.source.poll(client)
        except (httpx.HTTPError, SpotError) as exc:
            if not self._failing and not self._stop.is_set():
                self._note(
                    f"spot watch: cannot read {self.source.url} ({type(exc).__name__}: {exc}); "
                    f"still polling every {self.interval:g}s, the run goes on"
                )
            self._failing = True
            return False
        except Exception as exc:  # a watcher bug must never take the run down with it
            self._note(f"spot watch stopped: {type(exc).__name__}: {exc}")
            return True
        if self._stop.is_set():  # the answer came after the run ended
            return True
        if self._failing:
            self._failing = False
            self._note(f"spot watch: {self.source.url} answers again")
        if notice is None:
            return False
        self._drain(f"spot notice: {notice}")
        self._note(f"spot notice from {self.source.url}: {notice}; draining the run")
        return True
