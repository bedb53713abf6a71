"""Model engines behind one interface: ``local`` today; ``openai`` is next."""

from __future__ import annotations

from durabatch.config import Settings
from durabatch.errors import UsageError
from durabatch.models.base import Provider


def make_provider(settings: Settings) -> Provider:
    if settings.provider == "local":
        from durabatch.models.local import LocalProvider

        return LocalProvider()
    raise UsageError(
        f"--provider {settings.provider} is not available in this version yet; "
        "use --provider local (the default)"
    )
