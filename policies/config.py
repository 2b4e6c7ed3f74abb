"""The policy settings: one YAML file, validated once at start-up, with per-channel overrides.

The bundled ``policies/default.yaml`` holds every default. A deployment's own file (named by
``SUPPORTBOT_POLICIES``) lists only what it changes: it is merged onto the defaults, then the
result is validated. Each ``channels`` override (``"platform:channel"`` or ``"platform:*"``) is
merged onto the top level the same way and validated on its own, at load time, so a bad override
fails the start-up instead of the first message in that channel.

Errors are `bot.errors.ConfigError`s naming the file, the key path and how to fix it::

    /etc/bot/policies.yaml: fallback.misses_before_offer: must be at least 1 (got 0)
    /etc/bot/policies.yaml: channels."slack:*".abuse.treshold: unknown key 'treshold'; known keys
        here: threshold, words
"""

from __future__ import annotations

import copy
import enum
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from bot.errors import ConfigError

__all__ = [
    "DEFAULT_SOURCE",
    "Abuse",
    "Escalation",
    "FallbackSettings",
    "HandoffSettings",
    "Persona",
    "PolicyConfig",
    "PolicySettings",
    "Repeat",
    "Resolution",
    "SentimentSettings",
    "Texts",
    "Tone",
    "TurnTaking",
    "default_mapping",
    "load_policy_config",
]

#: How the bundled defaults are named in messages.
DEFAULT_SOURCE: Final = "policies/default.yaml (bundled)"
#: The variable that names a deployment's policy file.
ENV_VARIABLE: Final = "SUPPORTBOT_POLICIES"

_CHANNEL_KEY = re.compile(r"^[a-z0-9_-]+:(\*|[^\s*]+)$")


class Tone(enum.StrEnum):
    """How formally the bot speaks: picks the built-in wording."""

    INFORMAL = "informal"
    FORMAL = "formal"


class _Section(BaseModel):
    """A settings section: unknown keys are errors, values are frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _phrases(value: tuple[str, ...]) -> tuple[str, ...]:
    cleaned = tuple(p.strip() for p in value)
    for i, phrase in enumerate(cleaned):
        if not phrase or not phrase.strip("*"):
            raise ValueError(f"item {i} is empty; remove it or write the phrase")
    return cleaned


class Persona(_Section):
    """Who the bot is.

    Attributes:
        bot_name: the name in greetings; None uses the process setting ``SUPPORTBOT_BOT_NAME``.
        tone: picks the built-in wording of every text left null.
        sign_off: a line added to goodbyes, the "resolved" reply and handoff messages.
    """

    bot_name: str | None = Field(min_length=1, max_length=80)
    tone: Tone
    sign_off: str = Field(max_length=300)


#: The placeholders each text may use.
TEXT_PLACEHOLDERS: Final[Mapping[str, frozenset[str]]] = {
    "greeting": frozenset({"bot_name"}),
    "thanks": frozenset({"bot_name"}),
    "goodbye": frozenset({"bot_name"}),
    "fallback": frozenset({"bot_name"}),
    "fallback_again": frozenset({"bot_name"}),
    "offer_person": frozenset({"bot_name"}),
    "clarify": frozenset({"bot_name"}),
    "repeat_clarify": frozenset({"bot_name", "topic"}),
    "repeat_offer": frozenset({"bot_name", "topic"}),
    "handoff": frozenset({"bot_name"}),
    "handoff_with_wait": frozenset({"bot_name", "wait"}),
    "abuse": frozenset({"bot_name"}),
    "resolved": frozenset({"bot_name"}),
}


class Texts(_Section):
    """What the bot says; None keeps the tone's built-in wording (see `policies.texts`)."""

    greeting: str | None
    thanks: str | None
    goodbye: str | None
    fallback: str | None
    fallback_again: str | None
    offer_person: str | None
    clarify: str | None
    repeat_clarify: str | None
    repeat_offer: str | None
    handoff: str | None
    handoff_with_wait: str | None
    abuse: str | None
    resolved: str | None

    @field_validator("*")
    @classmethod
    def _placeholders(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("is empty; write the text or use null for the built-in wording")
        allowed = TEXT_PLACEHOLDERS[str(info.field_name)]
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as e:
            raise ValueError(
                f"has a stray brace ({e}); write {{{{ or }}}} for a literal one"
            ) from e
        unknown = sorted(n for n in names if n not in allowed)
        if unknown:
            usable = ", ".join(f"{{{n}}}" for n in sorted(allowed))
            raise ValueError(
                f"unknown placeholder {', '.join(f'{{{n}}}' for n in unknown)}; "
                f"this text can use {usable}"
            )
        return value


class TurnTaking(_Section):
    """When the bot speaks.

    Attributes:
        max_consecutive_bot_messages: silence once the bot posted this many in a row.
        burst_window_seconds: messages from one person this close together are one turn.
        head_start_seconds: how long people get to answer first in shared channels.
    """

    max_consecutive_bot_messages: int = Field(ge=2, le=100)
    burst_window_seconds: float = Field(ge=0.0, le=60.0)
    head_start_seconds: float = Field(ge=0.0, le=3600.0)


class FallbackSettings(_Section):
    """Misses: what happens when the bot cannot answer.

    Attributes:
        misses_before_offer: misses in a row before the handoff is offered or performed.
        handoff_on_misses: "offer" asks the customer; "perform" hands over.
    """

    misses_before_offer: int = Field(ge=1, le=20)
    handoff_on_misses: Literal["offer", "perform"]


class Repeat(_Section):
    """Repeated questions: never the same answer twice.

    Attributes:
        min_similarity: the least similarity (0-1) of another topic offered instead.
        max_options: how many other topics are offered.
        question_similarity: the share of topic words two messages share to ask the same thing.
    """

    min_similarity: float = Field(ge=0.0, le=1.0)
    max_options: int = Field(ge=1, le=10)
    question_similarity: float = Field(gt=0.0, le=1.0)


class HandoffSettings(_Section):
    """The handoff message.

    Attributes:
        expected_wait: how long a person usually takes ("within 2 hours"); "" says nothing.
    """

    expected_wait: str = Field(max_length=120)


class Escalation(_Section):
    """What goes to a person at once.

    Attributes:
        request_phrases: how customers ask for a person.
        keywords: other phrases that always go to a person.
        topics: named lists of phrases that always go to a person (the name is the reason).
    """

    request_phrases: tuple[str, ...]
    keywords: tuple[str, ...]
    topics: dict[str, tuple[str, ...]]

    _clean = field_validator("request_phrases", "keywords")(_phrases)

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        cleaned: dict[str, tuple[str, ...]] = {}
        for name, phrases in value.items():
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(
                    f"topic name {name!r} must be lower case letters, digits and underscores "
                    "(it becomes the handoff reason), e.g. billing_dispute"
                )
            try:
                cleaned[name] = _phrases(phrases)
            except ValueError as e:
                raise ValueError(f"topic {name!r}: {e}") from None
        return cleaned


class Abuse(_Section):
    """Abusive and profane messages.

    Attributes:
        words: insults and profanity ("*" matches the rest of a word).
        threshold: the abusive message that makes this many is handed to a person.
    """

    words: tuple[str, ...]
    threshold: int = Field(ge=1, le=50)

    _clean = field_validator("words")(_phrases)


class SentimentSettings(_Section):
    """Escalation on negative sentiment.

    Attributes:
        enabled: whether negative sentiment hands over.
        threshold: the VADER compound score (-1 to 1) at or below which it does.
    """

    enabled: bool
    threshold: float = Field(ge=-1.0, le=1.0)


class Resolution(_Section):
    """Resolved threads.

    Attributes:
        phrases: customer phrases that mark the thread resolved.
        emoji: emoji (and reactions) that mark it resolved.
        acknowledge: whether the resolving message gets one short reply.
    """

    phrases: tuple[str, ...]
    emoji: tuple[str, ...]
    acknowledge: bool

    _clean = field_validator("phrases")(_phrases)

    @field_validator("emoji")
    @classmethod
    def _emoji(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(e.strip() for e in value)
        if any(not e for e in cleaned):
            raise ValueError("has an empty item; remove it")
        return cleaned


class PolicySettings(_Section):
    """Every policy setting for one channel (the top level, or it with an override merged in)."""

    persona: Persona
    texts: Texts
    turn_taking: TurnTaking
    fallback: FallbackSettings
    repeat: Repeat
    handoff: HandoffSettings
    escalation: Escalation
    abuse: Abuse
    sentiment: SentimentSettings
    resolution: Resolution


class _PolicyFile(PolicySettings):
    channels: dict[str, dict[str, Any]]


SECTIONS: Final[tuple[str, ...]] = tuple(PolicySettings.model_fields)


# Loading ----------------------------------------------------------------------------------------


def default_mapping() -> dict[str, Any]:
    """The bundled defaults as plain data (a fresh copy)."""
    text = resources.files("policies").joinpath("default.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` onto `base`: mappings merge key by key, anything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = _merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _path(loc: tuple[int | str, ...], prefix: tuple[str, ...] = ()) -> str:
    parts: list[str] = []
    for part in (*prefix, *loc):
        text = str(part)
        if isinstance(part, int):
            parts.append(f"[{part}]")
            continue
        needs_quotes = not re.fullmatch(r"[A-Za-z0-9_]+", text)
        parts.append(("." if parts else "") + (f'"{text}"' if needs_quotes else text))
    return "".join(parts) or "(top level)"


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str] | None:
    """The keys allowed where `loc` points, by walking the models; None when unknown."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


_TYPE_NAMES: Final[Mapping[str, str]] = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
    "model_attributes_type": "a mapping of keys to values",
}


def _describe(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    got = error.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(model, loc)
        hint = f"; known keys here: {', '.join(known)}" if known else ""
        return f"unknown key {loc[-1]!r}{hint} (check the spelling)"
    if kind == "missing":
        return "is missing; add it (docs/policies.md lists every key)"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, not {got!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        context = error.get("ctx", {})
        words = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("more than", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("less than", "lt"),
        }[kind]
        bound = next(iter(context.values()), "?")
        hint = _range_hint(model, loc)
        return f"must be {words[0]} {bound} (got {got!r}){hint}"
    if kind in ("literal_error", "enum"):
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected} (got {got!r})"
    if kind == "string_too_short":
        return "is empty; write a value or use null"
    if kind == "string_too_long":
        limit = error.get("ctx", {}).get("max_length")
        return f"is too long: at most {limit} characters"
    if kind == "value_error":
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        return message
    return f"{error.get('msg', 'is invalid')} (got {got!r})"


def _range_hint(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return ""
        info = current.model_fields.get(str(part))
        if info is None:
            return ""
        current = info.annotation
    if not (isinstance(current, type) and issubclass(current, BaseModel)):
        return ""
    info = current.model_fields.get(str(loc[-1]))
    if info is None:
        return ""
    low = high = None
    for item in info.metadata:
        for name in ("ge", "gt"):
            if getattr(item, name, None) is not None:
                low = getattr(item, name)
        for name in ("le", "lt"):
            if getattr(item, name, None) is not None:
                high = getattr(item, name)
    if low is None or high is None:
        return ""
    return f"; use a value from {low} to {high}"


def _validate(
    model: type[BaseModel], data: Mapping[str, Any], source: str, prefix: tuple[str, ...] = ()
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [
            f"{source}: {_path(tuple(err['loc']), prefix)}: {_describe(err, model)}"
            for err in e.errors()
        ]
        raise ConfigError(_report(lines, source)) from None


def _report(lines: list[str], source: str) -> str:
    fix = (
        f"fix {source} (docs/policies.md lists every key), or unset {ENV_VARIABLE} to use the "
        "bundled defaults"
        if source != DEFAULT_SOURCE
        else "the bundled defaults are broken: reinstall the package"
    )
    return "invalid policy settings:\n  " + "\n  ".join(lines) + f"\n{fix}"


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The validated policy settings: the top level and every channel override, resolved.

    Attributes:
        source: where they came from (a path, or the bundled defaults).
        base: the settings of every channel without an override.
        overrides: the resolved settings by override key ("slack:*", "slack:C123").
    """

    source: str
    base: PolicySettings
    overrides: Mapping[str, PolicySettings] = field(default_factory=dict)

    def resolve(self, platform: str, channel: str) -> tuple[str, PolicySettings]:
        """The settings of a channel and the key they came from ("" for the top level).

        ``"platform:channel"`` wins over ``"platform:*"``, which wins over the top level.
        """
        for key in (f"{platform}:{channel}", f"{platform}:*"):
            settings = self.overrides.get(key)
            if settings is not None:
                return key, settings
        return "", self.base

    def for_channel(self, platform: str, channel: str) -> PolicySettings:
        """The settings of a channel."""
        return self.resolve(platform, channel)[1]

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        source: str = "<settings>",
        *,
        default_bot_name: str = "Lumen Assistant",
    ) -> PolicyConfig:
        """Validate settings given as data; merged onto the bundled defaults first.

        Args:
            data: the file's content (only what differs from the defaults).
            source: how to name the data in error messages (a path).
            default_bot_name: the name used where ``persona.bot_name`` is null.

        Raises:
            ConfigError: a key is unknown, a value has the wrong type or is out of range.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                _report(
                    [f"{source}: (top level): must be a mapping of sections, not {data!r}"], source
                )
            )
        merged = _merge(default_mapping(), data)
        raw_channels = merged.get("channels")
        channels: dict[str, Any] = raw_channels if isinstance(raw_channels, dict) else {}
        top = _validate(_PolicyFile, merged, source)
        assert isinstance(top, _PolicyFile)
        top_data = {k: v for k, v in merged.items() if k != "channels"}
        base = _named(top.model_dump(exclude={"channels"}), default_bot_name)
        overrides: dict[str, PolicySettings] = {}
        problems: list[str] = []
        for key, override in channels.items():
            where = ("channels", str(key))
            if not isinstance(key, str) or not _CHANNEL_KEY.match(key):
                problems.append(
                    f"{source}: {_path(where)}: not a channel key; write "
                    '"platform:channel" or "platform:*" (e.g. "slack:C0123" or "zendesk:*")'
                )
                continue
            if not isinstance(override, Mapping):
                problems.append(
                    f"{source}: {_path(where)}: must be a mapping of sections, not {override!r}"
                )
                continue
            unknown = sorted(str(k) for k in override if k not in SECTIONS)
            if unknown:
                problems.append(
                    f"{source}: {_path((*where, unknown[0]))}: unknown section {unknown[0]!r}; "
                    f"known sections: {', '.join(SECTIONS)}"
                )
                continue
            platform = key.split(":", 1)[0]
            layered = top_data
            wildcard = channels.get(f"{platform}:*")
            if not key.endswith(":*") and isinstance(wildcard, Mapping):
                layered = _merge(layered, wildcard)
            try:
                validated = _validate(
                    PolicySettings, _merge(layered, override), source, prefix=where
                )
            except ConfigError as e:
                problems.extend(str(e).splitlines()[1:-1])
                continue
            overrides[key] = _named(validated.model_dump(), default_bot_name)
        if problems:
            raise ConfigError(_report([p.strip() for p in problems], source))
        return cls(source, base, overrides)


def _named(data: dict[str, Any], default_bot_name: str) -> PolicySettings:
    if data["persona"]["bot_name"] is None:
        data["persona"]["bot_name"] = default_bot_name
    return PolicySettings.model_validate(data)


def load_policy_config(
    path: Path | str | None = None, *, default_bot_name: str = "Lumen Assistant"
) -> PolicyConfig:
    """Load and validate the policy settings: `path`, or the bundled defaults when None.

    Args:
        path: a YAML file with the settings that differ from the defaults.
        default_bot_name: the name used where ``persona.bot_name`` is null.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds invalid settings; the message
            names the file, the key path and how to fix it.
    """
    if path is None:
        return PolicyConfig.from_mapping({}, DEFAULT_SOURCE, default_bot_name=default_bot_name)
    file = Path(path)
    source = str(file)
    try:
        text = file.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: no such policy file; fix {ENV_VARIABLE} to name an existing YAML file, "
            "or unset it to use the bundled defaults"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{source}: cannot read the policy file ({e}); it must be a readable UTF-8 YAML file"
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            f"{source}{where}: not valid YAML ({problem}); check the indentation and quoting "
            "around that line"
        ) from e
    if data is None:
        data = {}
    return PolicyConfig.from_mapping(data, source, default_bot_name=default_bot_name)
