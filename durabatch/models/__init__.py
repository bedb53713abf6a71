"""Model engines behind one interface: the embedded ``local`` one, and ``openai``."""

from __future__ import annotations

import threading

from durabatch.config import Settings
from durabatch.errors import UsageError
from durabatch.models.base import Provider


def make_provider(settings: Settings, stopping: threading.Event | None = None) -> Provider:
    """The provider the settings name; ``stopping`` (the engine's drain) ends retries."""
    if settings.provider == "local":
        from durabatch.models.local import LocalProvider

        return LocalProvider()
    if settings.provider == "openai" and settings.base_url:
        from durabatch.models.openai import OpenAIProvider
        from durabatch.models.retry import RetryPolicy

        stop = stopping or threading.Event()

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # a drain cuts the wait short

        policy = RetryPolicy(
            max_attempts=settings.retry_attempts,
            max_total_seconds=settings.retry_seconds,
            sleep=pause,
            cancelled=stop.is_set,
        )
        return OpenAIProvider(
            base_url=settings.base_url,
            api_key=settings.api_key,
            policy=policy,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            concurrency=settings.in_flight,
            max_output_tokens=settings.max_output_tokens,
        )
    raise UsageError(f"--provider {settings.provider} needs --base-url")
