"""Policy settings: the bundled defaults, overrides per channel, and errors that say how to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import ConfigError
from policies.config import (
    DEFAULT_SOURCE,
    PolicyConfig,
    PolicySettings,
    Tone,
    default_mapping,
    load_policy_config,
)


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True))
    return path


def error_of(tmp_path: Path, data: Any) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_policy_config(path)
    message = str(caught.value)
    assert str(path) in message
    return message


# Defaults --------------------------------------------------------------------------------------


def test_bundled_defaults_load_and_cover_every_setting() -> None:
    config = load_policy_config()

    base = config.base
    assert config.source == DEFAULT_SOURCE
    assert config.overrides == {}
    assert base.persona.bot_name == "Lumen Assistant"
    assert base.persona.tone is Tone.INFORMAL
    assert base.turn_taking.burst_window_seconds == 2.0
    assert base.turn_taking.head_start_seconds == 0.0
    assert base.fallback.handoff_on_misses == "offer"
    assert {"billing_dispute", "cancellation", "legal"} <= set(base.escalation.topics)
    assert "real person" in base.escalation.request_phrases
    assert "I'd like to talk to a person" in base.escalation.request_phrases
    assert -1.0 <= base.sentiment.threshold <= 0.0
    assert "✅" in base.resolution.emoji
    # The YAML file is the single source of defaults: it names every key of the models.
    data = default_mapping()
    for section, model in PolicySettings.model_fields.items():
        annotation = model.annotation
        assert annotation is not None
        assert set(data[section]) == set(annotation.model_fields), section


def test_bundled_defaults_are_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"default.yaml"' in pyproject.split("[tool.setuptools.package-data]")[1]


def test_missing_bot_name_uses_the_process_setting() -> None:
    config = load_policy_config(default_bot_name="Nova")

    assert config.base.persona.bot_name == "Nova"


def test_a_file_lists_only_what_it_changes(tmp_path: Path) -> None:
    path = write(tmp_path, {"fallback": {"misses_before_offer": 4}, "persona": {"tone": "formal"}})

    config = load_policy_config(path)

    assert config.source == str(path)
    assert config.base.fallback.misses_before_offer == 4
    assert config.base.fallback.handoff_on_misses == "offer"  # kept from the defaults
    assert config.base.persona.tone is Tone.FORMAL
    assert config.base.abuse.words == load_policy_config().base.abuse.words


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_policy_config(write(tmp_path, "")).base == load_policy_config().base


# Per-channel overrides -------------------------------------------------------------------------


def test_channel_overrides_layer_platform_then_channel(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "handoff": {"expected_wait": "within a day"},
            "channels": {
                "slack:*": {"turn_taking": {"head_start_seconds": 30}},
                "slack:C42": {
                    "persona": {"tone": "formal"},
                    "escalation": {"topics": {"security": ["breach"]}},
                },
            },
        },
    )

    config = load_policy_config(path)

    key, general = config.resolve("slack", "C1")
    assert key == "slack:*"
    assert general.turn_taking.head_start_seconds == 30
    assert general.persona.tone is Tone.INFORMAL
    key, special = config.resolve("slack", "C42")
    assert key == "slack:C42"
    assert special.turn_taking.head_start_seconds == 30  # from "slack:*"
    assert special.persona.tone is Tone.FORMAL
    assert special.handoff.expected_wait == "within a day"  # from the top level
    # Topics merge by name: the defaults stay, the new one is added.
    assert {"billing_dispute", "legal", "security"} <= set(special.escalation.topics)
    assert config.resolve("discord", "C42") == ("", config.base)
    assert config.for_channel("web", "anything") is config.base


def test_an_override_list_replaces_the_default_list(tmp_path: Path) -> None:
    path = write(tmp_path, {"channels": {"web:*": {"abuse": {"words": ["darn"]}}}})

    assert load_policy_config(path).for_channel("web", "x").abuse.words == ("darn",)


# Errors ----------------------------------------------------------------------------------------


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such policy file") as caught:
        load_policy_config(tmp_path / "nope.yaml")
    assert "SUPPORTBOT_POLICIES" in str(caught.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "fallback:\n  misses_before_offer: [1\n")

    assert "not valid YAML" in message
    assert f"{tmp_path / 'policies.yaml'}:3:" in message or ":2:" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"abuse": {"treshold": 3}})

    assert "abuse.treshold: unknown key 'treshold'" in message
    assert "known keys here: threshold, words" in message
    assert "docs/policies.md" in message


def test_unknown_section(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"personna": {"tone": "formal"}})

    assert "personna: unknown key 'personna'" in message
    assert "persona" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"fallback": {"misses_before_offer": "two"}}, "fallback.misses_before_offer: must be a"),
        ({"sentiment": {"enabled": "maybe"}}, "sentiment.enabled: must be true or false"),
        ({"escalation": {"keywords": "urgent"}}, "escalation.keywords: must be a list"),
        ({"persona": {"tone": "casual"}}, "persona.tone: must be one of 'informal' or 'formal'"),
        (
            {"fallback": {"handoff_on_misses": "always"}},
            "fallback.handoff_on_misses: must be one of 'offer' or 'perform'",
        ),
    ],
)
def test_wrong_types_say_what_is_expected(tmp_path: Path, data: Any, expected: str) -> None:
    assert expected in error_of(tmp_path, data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"sentiment": {"threshold": 3}},
            "sentiment.threshold: must be at most 1.0 (got 3); use a value from -1.0 to 1.0",
        ),
        (
            {"fallback": {"misses_before_offer": 0}},
            "fallback.misses_before_offer: must be at least 1 (got 0); use a value from 1 to 20",
        ),
        (
            {"turn_taking": {"burst_window_seconds": -1}},
            "turn_taking.burst_window_seconds: must be at least 0.0 (got -1)",
        ),
        ({"repeat": {"min_similarity": 1.5}}, "repeat.min_similarity: must be at most 1.0"),
        ({"abuse": {"threshold": 0}}, "abuse.threshold: must be at least 1"),
    ],
)
def test_out_of_range_thresholds_give_the_range(tmp_path: Path, data: Any, expected: str) -> None:
    assert expected in error_of(tmp_path, data)


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, {"abuse": {"threshold": -2}, "sentiment": {"threshold": -5}, "extra": 1}
    )

    assert "abuse.threshold" in message
    assert "sentiment.threshold" in message
    assert "extra: unknown key" in message


def test_empty_phrase_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"escalation": {"request_phrases": ["human", "  "]}})

    assert "escalation.request_phrases: item 1 is empty" in message


def test_bad_topic_name(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"escalation": {"topics": {"Billing Dispute": ["chargeback"]}}})

    assert "escalation.topics" in message
    assert "lower case letters" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Back in {minutes} minutes", "unknown placeholder {minutes}; this text can use"),
        ("Hello {", "stray brace"),
        ("   ", "is empty"),
    ],
)
def test_texts_are_checked_for_placeholders(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, {"texts": {"handoff": text}})

    assert "texts.handoff:" in message
    assert expected in message


def test_wait_placeholder_only_where_it_is_filled(tmp_path: Path) -> None:
    ok = write(tmp_path, {"texts": {"handoff_with_wait": "A person replies {wait}."}})
    assert load_policy_config(ok).base.texts.handoff_with_wait == "A person replies {wait}."

    message = error_of(tmp_path, {"texts": {"handoff": "A person replies {wait}."}})
    assert "unknown placeholder {wait}" in message


def test_bad_channel_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"channels": {"slack": {"persona": {"tone": "formal"}}}})

    assert 'channels.slack: not a channel key; write "platform:channel" or "platform:*"' in message


def test_error_inside_an_override_names_its_key_path(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        {"channels": {"slack:*": {"abuse": {"threshold": 0}, "turn_taking": {"speed": 1}}}},
    )

    assert 'channels."slack:*".abuse.threshold: must be at least 1' in message
    assert 'channels."slack:*".turn_taking.speed: unknown key' in message


def test_unknown_section_inside_an_override(tmp_path: Path) -> None:
    message = error_of(tmp_path, {"channels": {"web:*": {"channels": {}}}})

    assert "unknown section 'channels'" in message


def test_from_mapping_without_a_file() -> None:
    config = PolicyConfig.from_mapping({"abuse": {"threshold": 5}})

    assert config.base.abuse.threshold == 5
    with pytest.raises(ConfigError, match=r"<settings>: abuse.threshold"):
        PolicyConfig.from_mapping({"abuse": {"threshold": "x"}})


# Start-up --------------------------------------------------------------------------------------


def test_supportbot_policies_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.service import load_policies
    from bot.settings import Settings

    path = write(tmp_path, {"persona": {"tone": "formal"}})
    monkeypatch.setenv("SUPPORTBOT_POLICIES", str(path))
    monkeypatch.setenv("SUPPORTBOT_BOT_NAME", "Nova")

    settings = Settings()
    config = load_policies(settings)

    assert settings.policies == path
    assert config.source == str(path)
    assert config.base.persona.tone is Tone.FORMAL
    assert config.base.persona.bot_name == "Nova"


def test_invalid_policies_stop_the_start_up_before_the_database(tmp_path: Path) -> None:
    from bot.service import build_services
    from bot.settings import Settings

    path = write(tmp_path, {"sentiment": {"threshold": -3}})
    data = tmp_path / "data"

    with pytest.raises(ConfigError, match=r"sentiment\.threshold: must be at least -1\.0"):
        build_services(Settings(data_dir=data, policies=path))
    assert not data.exists()
