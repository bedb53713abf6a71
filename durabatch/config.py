"""Settings: defaults < durabatch.toml < env DURABATCH_* < flags.

Model settings (provider, models, base URL) belong to a run and are stored
with it; the API key never is. Operational settings (concurrency, grace,
timeouts) may change from one session of a run to the next.
"""

from __future__ import annotations

import contextlib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from durabatch.errors import UsageError
from durabatch.pricing import parse_prices

CONFIG_FILE = "durabatch.toml"
DEFAULT_DB = "durabatch.db"

# settings that belong to the run and are stored with it (never the key)
# max_input_tokens too: saved partial results are only valid for the chunking that made them;
# pdf_engine too: every PDF of a run is read by the same engine, whatever a resume's toml says
RUN_SETTINGS = (
    "provider", "model", "summarize_model", "entities_model", "base_url", "include", "exclude",
    "max_input_tokens", "price_provider", "prices", "max_cost", "max_output_tokens", "pdf_engine",
    "deliver_to", "on_failure", "compensate_url",
)  # fmt: skip
# settings added to RUN_SETTINGS after runs were already being stored
KEPT_IF_MISSING = ("pdf_engine", "deliver_to", "on_failure", "compensate_url")
# pypdf (pure Python) is the default; pdfium (pypdfium2, the optional extra) reads ~4x faster
PDF_ENGINES = ("pypdf", "pdfium")
# the extra's one package, into the environment durabatch runs in, however it was installed
PDFIUM_INSTALL = "pip install 'pypdfium2>=5'"
ON_FAILURE = ("keep", "compensate")
# documents in flight without --concurrency: a remote model's calls (or a webhook's
# deliveries) wait on the network, and four at once is gentle on a rate limit; the embedded
# engine's steps take milliseconds and cost nothing, and more documents in flight put more
# steps in each commit (one fsync) and in each turn of the loop: 2,000 small files ran 26%
# faster at 32 than at 4, and 5,000 ran 3% faster at 64 than at 32 (README, Performance)
DEFAULT_CONCURRENCY = 4
LOCAL_CONCURRENCY = 64


@dataclass(frozen=True)
class Settings:
    db: str = DEFAULT_DB
    provider: str = "local"
    model: str | None = None
    summarize_model: str | None = None
    entities_model: str | None = None
    base_url: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    price_provider: str | None = None
    # {model or "provider/model": {input, output, cached_input}} in dollars per 1M tokens
    prices: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    concurrency: int | None = None  # None: the engine's own default (see in_flight)
    grace: float = 25.0
    extract_timeout: float = 60.0
    max_bytes: int = 100 * 1024 * 1024
    pdf_engine: str = "pypdf"
    max_input_tokens: int | None = None
    lease_ttl: float = 30.0
    max_attempts: int = 3
    # network: the read timeout stays below the default grace, so a drain is never
    # kept waiting by a call that will not answer
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    retry_attempts: int = 6
    retry_seconds: float = 300.0
    # dollars; no paid call starts whose worst case would pass it (it holds across crashes)
    max_cost: float | None = None
    max_output_tokens: int = 2048
    # reuse a finished step with the same inputs from an earlier run of this database
    no_cache: bool = False
    # spot/preemption notices: aws, gcp or a URL; polled while the run works, then a drain
    watch_spot: str | None = None
    spot_base_url: str | None = None  # the metadata server of aws/gcp (tests, proxies)
    spot_interval: float = 5.0
    # side effects: a folder or a webhook URL each finished document is delivered to
    deliver_to: str | None = None
    # a run that ends with failed documents: keep what it delivered, or withdraw it all
    on_failure: str = "keep"
    # where a webhook delivery is withdrawn ({id}, {key}); default DELETE URL/ID
    compensate_url: str | None = None

    @property
    def in_flight(self) -> int:
        """How many documents a run works on at once: --concurrency, or the default of
        the run's engine."""
        if self.concurrency is not None:
            return self.concurrency
        # a webhook is a remote receiver too: as many deliveries at once as a remote model's calls
        webhook = self.deliver_to is not None and _is_url(self.deliver_to)
        return (
            LOCAL_CONCURRENCY if self.provider == "local" and not webhook else DEFAULT_CONCURRENCY
        )

    def model_for(self, step: str) -> str:
        specific = {"summarize": self.summarize_model, "entities": self.entities_model}
        return specific.get(step) or self.model or self.provider

    def run_settings(self) -> dict[str, Any]:
        """What is stored with a run: models and limits, never the key."""
        stored = asdict(self) | {"concurrency": self.in_flight}  # what the run began with
        del stored["api_key"], stored["db"]
        return stored

    def with_run(self, stored: Mapping[str, Any]) -> Settings:
        """A resumed run keeps its models, prices and budget; the operational settings
        may change."""
        kept = {k: stored[k] for k in RUN_SETTINGS if k in stored}
        # a run made before these settings existed ran with their defaults: it keeps them,
        # whatever durabatch.toml or the environment now say (its PDFs stay pypdf's)
        kept = {k: getattr(DEFAULTS, k) for k in KEPT_IF_MISSING} | kept
        for name in ("include", "exclude"):
            if name in kept:
                kept[name] = tuple(kept[name])
        return replace(self, **kept)


DEFAULTS = Settings()


def load(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
         cwd: Path | None = None) -> Settings:  # fmt: skip
    """Merge the four layers; ``flags`` holds only options the user actually gave."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    toml = (cwd or Path.cwd()) / CONFIG_FILE
    from_toml = _from_toml(toml)
    from_env = _from_env(env)
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    # where each value came from, for a message about it (the last layer that set it)
    where = {k: f"{toml}: {k}" for k in from_toml} | {
        k: f"DURABATCH_{k.upper()}" for k in from_env
    } | {k: "--" + k.replace("_", "-") for k in given}  # fmt: skip
    values.update(from_toml)
    values.update(from_env)
    values.update({k: _typed(k, v, where[k]) for k, v in given.items()})
    settings = Settings(**values)
    _validate(settings, where)
    return settings


def _from_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}; fix or remove it") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            f"cannot read {path} ({reason}); fix its permissions or remove it"
        ) from exc
    known = {f.name for f in fields(Settings)} - {"api_key"}
    values = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}; remove them")
    return {k: _typed(k, v, f"{path}: {k}") for k, v in values.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f"DURABATCH_{f.name.upper()}"
        if env.get(name) and f.name != "api_key":
            values[f.name] = _typed(f.name, env[name], name)
    name = "DURABATCH_API_KEY" if env.get("DURABATCH_API_KEY") else "OPENAI_API_KEY"
    key = (env.get(name) or "").strip()  # a key pasted from a file often ends in a newline
    if any(c.isspace() or not c.isprintable() for c in key):
        raise UsageError(f"{name} contains spaces or control characters; set it to the key alone")
    if key:
        values["api_key"] = key
    return values


def _typed(name: str, value: Any, where: str) -> Any:
    """A setting's value as its field's type, whichever layer it came from."""
    kind = _KINDS[name]
    if kind == "tuple":
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, list | tuple) and all(isinstance(i, str) for i in items):
            return tuple(i for i in items if i)
    elif kind in _NUMBERS:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            with contextlib.suppress(ValueError):
                return _NUMBERS[kind](value)
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
    elif kind == "dict":
        if isinstance(value, dict):
            return value
    elif isinstance(value, str):
        return value
    expected = {"int": "a whole number", "float": "a number", "tuple": "a list of globs",
                "dict": "a table", "bool": "true or false"}  # fmt: skip
    raise UsageError(f"{where} must be {expected.get(kind, 'text')}, not {value!r}")


_NUMBERS: dict[str, type] = {"int": int, "float": float}
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_KINDS = {f.name: str(f.type).split(" ")[0].split("[")[0] for f in fields(Settings)}


def _validate(settings: Settings, where: Mapping[str, str] | None = None) -> None:
    parse_prices(settings.prices, "prices")  # a bad price fails before any run starts
    if settings.provider not in ("local", "openai"):
        raise UsageError(f"--provider must be local or openai, not {settings.provider!r}")
    if settings.base_url and not settings.base_url.startswith(("http://", "https://")):
        raise UsageError(
            f"--base-url must start with http:// or https://, not {settings.base_url!r}"
        )
    if settings.base_url and "@" in urlsplit(settings.base_url).netloc:
        raise UsageError(
            "--base-url carries a user name or password, which would be stored with the run; "
            "give the URL without it and the key in DURABATCH_API_KEY"
        )
    if settings.provider == "openai" and not settings.base_url:
        raise UsageError(
            "--provider openai needs --base-url (or DURABATCH_BASE_URL), e.g. "
            "https://api.openai.com/v1"
        )
    if settings.provider == "openai" and not (
        settings.model or (settings.summarize_model and settings.entities_model)
    ):
        raise UsageError(
            "--provider openai needs --model (or --summarize-model and --entities-model)"
        )
    if settings.pdf_engine not in PDF_ENGINES:
        raise UsageError(f"--pdf-engine must be pypdf or pdfium, not {settings.pdf_engine!r}")
    _validate_numbers(settings, where or {})
    _validate_spot(settings)
    _validate_delivery(settings)


# a number's least value, and whether that value itself is allowed; a setting without a
# flag of its own is named by its environment variable (durabatch.toml takes it too)
NUMBERS = {
    "concurrency": (1, True, "--concurrency"),
    "grace": (0, True, "--grace"),
    "extract_timeout": (0, False, "--extract-timeout"),
    "read_timeout": (0, False, "--read-timeout"),
    "max_cost": (0, True, "--max-cost"),
    "max_input_tokens": (1, True, "--max-input-tokens"),
    "spot_interval": (0, False, "--spot-interval"),
    "max_bytes": (1, True, "DURABATCH_MAX_BYTES"),
    "lease_ttl": (1, True, "DURABATCH_LEASE_TTL"),
    "max_attempts": (1, True, "DURABATCH_MAX_ATTEMPTS"),
    "connect_timeout": (0, False, "DURABATCH_CONNECT_TIMEOUT"),
    "retry_attempts": (1, True, "DURABATCH_RETRY_ATTEMPTS"),
    "retry_seconds": (0, True, "DURABATCH_RETRY_SECONDS"),
    "max_output_tokens": (1, True, "DURABATCH_MAX_OUTPUT_TOKENS"),
}


# a number's greatest value: one thread a slot, so a typo must not start a million
MAXIMA = {"concurrency": 1024}


def _validate_numbers(settings: Settings, where: Mapping[str, str]) -> None:
    """Every number in its range, and a number (a NaN or an infinity is none): a bad value
    is a usage error now, not a failure of every document, or a run that never ends. The
    message names where the value came from: a flag, a variable or durabatch.toml."""
    for name, (least, allowed, default_flag) in NUMBERS.items():
        value = getattr(settings, name)
        if value is None:
            continue
        flag = where.get(name, default_flag)
        if not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, not {value!r}")
        if value < least or (value == least and not allowed):
            bound = f"at least {least}" if allowed else f"more than {least}"
            raise UsageError(f"{flag} must be {bound}, not {value!r}")
        if name in MAXIMA and value > MAXIMA[name]:
            raise UsageError(f"{flag} must be at most {MAXIMA[name]}, not {value!r}")


def _validate_delivery(settings: Settings) -> None:
    if settings.deliver_to is not None:
        # imported only here: its HTTP client is no cost to a run that delivers nothing
        from durabatch.targets import check_spec

        check_spec(settings.deliver_to)
    if settings.on_failure not in ON_FAILURE:
        raise UsageError(f"--on-failure must be keep or compensate, not {settings.on_failure!r}")
    if settings.compensate_url is not None:
        check_compensate_url(settings.compensate_url)


def check_compensate_url(url: str) -> None:
    """A DELETE URL template naming one delivery: {id} or {key} in it."""
    from durabatch.targets import check_spec

    check_spec(url, "--compensate-url")
    if not _is_url(url) or ("{id}" not in url and "{key}" not in url):
        raise UsageError(
            "--compensate-url must be an http:// or https:// URL naming one delivery with "
            "{id} (the receiver's id) or {key} (its Idempotency-Key), e.g. "
            "https://host/items/{id}"
        )


def _validate_spot(settings: Settings) -> None:
    watch, base = settings.watch_spot, settings.spot_base_url
    if watch is not None and watch.lower() not in ("aws", "gcp") and not _is_url(watch):
        raise UsageError(
            f"--watch-spot must be aws, gcp or an http:// or https:// URL, not {watch!r}"
        )
    if base is not None and not _is_url(base):
        raise UsageError(f"--spot-base-url must start with http:// or https://, not {base!r}")
    if base is not None and watch is not None and _is_url(watch):
        raise UsageError(
            "--spot-base-url is for --watch-spot aws or gcp; with a URL, --watch-spot is "
            "the whole address"
        )


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def require_pdf_engine(settings: Settings, *, resuming: bool = False) -> None:
    """Before a run or an estimate parses anything: the chosen PDF engine can be imported.

    Not part of ``load``: ``status`` or ``cost`` must work with ``pdf_engine = "pdfium"``
    in durabatch.toml on a machine without the extra."""
    if settings.pdf_engine != "pdfium":
        return
    try:
        import pypdfium2  # noqa: F401
    except ImportError:
        then = "then resume" if resuming else "or use --pdf-engine pypdf"
        raise UsageError(
            f"{'this run reads PDFs with' if resuming else '--pdf-engine'} pdfium, which needs "
            f"the pypdfium2 package, and it is not installed; install it with {PDFIUM_INSTALL} "
            f"(or pip install pypdfium2), {then}"
        ) from None
