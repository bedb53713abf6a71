"""The embedded offline engine: extractive summaries and rule-based entities."""

from __future__ import annotations

import random

import pytest

from durabatch.models.base import ENTITY_TYPES, Entity, Provider, estimate_tokens
from durabatch.models.local import LocalProvider
from durabatch.models.local_segments import split_sentences

OFF_TOPIC = "My cat knocked a glass of water off the kitchen table this morning."
CENTRAL = "Grid operators said solar capacity and battery storage changed how they plan the grid."
SOLAR = f"""{OFF_TOPIC}

Solar power capacity grew rapidly last year as panel prices fell. Cheaper solar
panels made rooftop solar power attractive for households. Utilities added more
solar capacity than coal and gas capacity combined. Analysts expect solar power
capacity to keep growing as panel prices fall further.

Battery storage is helping solar power supply electricity after sunset. {CENTRAL}
Some regions still struggle to connect new solar farms to the grid quickly.

The weather was pleasant on the day of the visit.
"""

NEWS = """Acme Corp. reported revenue of $3.5 million on March 3, 2024, said chief
executive Jane Doe. The company, based in Berlin, plans to open an office in
New York City in Q3 2024.

Dr. Alan Smith of the University of Cambridge met officials from the European
Commission and NASA on Monday. The Bank of England warned that €12m could be lost
by fiscal 2025. The Paris Agreement was discussed, and Acme Corp. paid USD 40,000.
"""


@pytest.fixture
def local() -> LocalProvider:
    return LocalProvider()


def test_satisfies_the_provider_protocol(local: LocalProvider) -> None:
    provider: Provider = local
    assert provider.name == "local"
    assert provider.window_tokens("local") > 1000


def test_summary_prefers_central_sentences_over_the_first(local: LocalProvider) -> None:
    summary = local.summarize(SOLAR, "local").value
    assert OFF_TOPIC not in summary
    assert CENTRAL in summary
    assert "weather" not in summary
    assert len(summary) <= 800


def test_summary_keeps_document_order(local: LocalProvider) -> None:
    summary = local.summarize(SOLAR, "local").value
    chosen = split_sentences(summary)
    assert len(chosen) >= 2
    body = " ".join(SOLAR.split())
    positions = [body.index(sentence) for sentence in chosen]
    assert positions == sorted(positions)


def test_summary_is_deterministic(local: LocalProvider) -> None:
    answers = {local.summarize(SOLAR, "local").value for _ in range(3)}
    assert len(answers) == 1
    assert LocalProvider().summarize(SOLAR, "other-name").value in answers


@pytest.mark.parametrize("text", ["", "   \n\t  \n"])
def test_blank_input_gives_an_empty_summary(local: LocalProvider, text: str) -> None:
    reply = local.summarize(text, "local")
    assert reply.value == ""
    assert reply.calls[0].input_tokens == estimate_tokens(text)
    assert reply.calls[0].output_tokens == 0


def test_sentence_splitting_minds_abbreviations_and_decimals() -> None:
    text = (
        "Mr. Smith of Acme Inc. paid $3.5 million for the U.S. plant. "
        "Dr. J. R. Jones agreed. The deal closed in the U.S. It was final."
    )
    assert split_sentences(text) == [
        "Mr. Smith of Acme Inc. paid $3.5 million for the U.S. plant.",
        "Dr. J. R. Jones agreed.",
        "The deal closed in the U.S.",
        "It was final.",
    ]


def test_text_without_punctuation_still_summarizes(local: LocalProvider) -> None:
    bullets = "\n".join(
        [
            "Install the package",
            "Configure the API key",
            "Run the batch job over the documents folder",
            "Check the status of the batch job",
            "Resume the batch job after a crash",
        ]
    )
    summary = local.summarize(bullets, "local").value
    assert summary
    assert "batch job" in summary
    one_line = " ".join(random.Random(7).choice(["alpha", "beta", "gamma"]) for _ in range(5000))
    summary = local.summarize(one_line, "local").value
    assert 0 < len(summary) <= 800
    assert summary.rstrip(".").split()[-1] in {"alpha", "beta", "gamma"}


def test_a_megabyte_of_text_completes(local: LocalProvider) -> None:
    rng = random.Random(3)
    vocabulary = [f"term{i}" for i in range(400)]
    sentences = []
    while sum(len(s) + 1 for s in sentences) < 1_000_000:
        words = [rng.choice(vocabulary) for _ in range(rng.randint(8, 20))]
        sentences.append(" ".join(words).capitalize() + ".")
    text = " ".join(sentences)
    assert 0 < len(local.summarize(text, "local").value) <= 800
    assert isinstance(local.entities(text, "local").value, list)


def _found(local: LocalProvider, text: str) -> set[tuple[str, str]]:
    return {(e.text, e.type) for e in local.entities(text, "local").value}


def test_entities_of_every_type(local: LocalProvider) -> None:
    found = _found(local, NEWS)
    expected = {
        ("Acme Corp.", "ORG"),
        ("University of Cambridge", "ORG"),
        ("European Commission", "ORG"),
        ("Bank of England", "ORG"),
        ("NASA", "ORG"),
        ("Jane Doe", "PERSON"),
        ("Alan Smith", "PERSON"),
        ("Berlin", "LOCATION"),
        ("New York City", "LOCATION"),
        ("March 3, 2024", "DATE"),
        ("Q3 2024", "DATE"),
        ("Monday", "DATE"),
        ("fiscal 2025", "DATE"),
        ("$3.5 million", "MONEY"),
        ("€12m", "MONEY"),
        ("USD 40,000", "MONEY"),
        ("Paris Agreement", "OTHER"),
    }
    assert expected <= found


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("The fee was 40,000 euros in total.", ("40,000 euros", "MONEY")),
        ("They paid 2 million dollars for it.", ("2 million dollars", "MONEY")),
        ("The budget is £5 billion.", ("£5 billion", "MONEY")),
        ("It was signed on 3 March 2024 by both.", ("3 March 2024", "DATE")),
        ("The log is dated 2024-03-03 exactly.", ("2024-03-03", "DATE")),
        ("Filed on 03/03/2024 by the clerk.", ("03/03/2024", "DATE")),
        ("Sales peaked in March 2024 before falling.", ("March 2024", "DATE")),
        ("Profits fell in 2023 across the board.", ("2023", "DATE")),
        ("Mrs. Patel chaired the meeting.", ("Patel", "PERSON")),
        ("Theresa May spoke first.", ("Theresa May", "PERSON")),
        ("Analysts at Goldman Sachs disagreed.", ("Goldman Sachs", "ORG")),
        ("The Finance Committee met.", ("Finance Committee", "ORG")),
        ("Officials in Germany and France agreed.", ("France", "LOCATION")),
        ("Flooding hit Northern California hard.", ("Northern California", "LOCATION")),
    ],
)
def test_entity_rules(local: LocalProvider, text: str, entity: tuple[str, str]) -> None:
    assert entity in _found(local, text)


def test_common_capitalised_words_are_not_entities(local: LocalProvider) -> None:
    text = (
        "The committee met again. However, Revenue rose sharply. May we proceed? "
        "Overall, Sales Growth was Strong. ANNUAL REPORT FOR INVESTORS. "
        "Chapter 3 covers Table 1. Version 3.5.1 shipped. Prices rose to 2024 units."
    )
    assert _found(local, text) == set()


def test_entities_are_typed_deduplicated_and_in_order(local: LocalProvider) -> None:
    entities = local.entities(NEWS + "\n" + NEWS, "local").value
    assert all(e.type in ENTITY_TYPES for e in entities)
    keys = [(e.text, e.type) for e in entities]
    assert len(keys) == len(set(keys))
    assert keys.count(("Acme Corp.", "ORG")) == 1
    assert keys[:3] == [("Acme Corp.", "ORG"), ("$3.5 million", "MONEY"), ("March 3, 2024", "DATE")]
    assert entities == local.entities(NEWS + "\n" + NEWS, "local").value


def test_entities_are_capped(local: LocalProvider) -> None:
    text = " ".join(f"Acme{i} Corp. paid ${i},000." for i in range(400))
    assert len(local.entities(text, "local").value) == 200


def test_call_records_are_filled(local: LocalProvider) -> None:
    summary = local.summarize(SOLAR, "anything")
    entities = local.entities(NEWS, "anything")
    for reply, text in ((summary, SOLAR), (entities, NEWS)):
        (call,) = reply.calls
        assert call.provider == "local"
        assert call.model == "anything"
        assert call.input_tokens == estimate_tokens(text)
        assert call.output_tokens > 0
        assert call.latency_ms >= 0
        assert call.ok and call.http_status is None
    assert summary.calls[0].output_tokens == estimate_tokens(summary.value)
    assert all(isinstance(e, Entity) for e in entities.value)
