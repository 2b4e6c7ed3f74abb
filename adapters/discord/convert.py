"""Pure conversions between Discord traffic and the shared model; no I/O happens here.

`message_facts` reads what the bot needs off a discord.py `Message` into a frozen `MessageFacts`;
everything after that is a plain function of those facts, which the unit tests call directly:

* `from_bot` — the one place that decides traffic from this bot or other bots is dropped;
* `why_answer` — whether (and why) a message is answered: a DM, a mention, a support channel, a
  new forum post, or a thread the bot takes part in;
* `conversation_key` — which conversation it belongs to. A question in a channel is keyed by its
  own id, which is also the id of the thread started from it, so follow-ups in that thread land in
  the same conversation;
* `placement` — where the answer goes;
* `to_inbound`, `reaction_feedback`, `button_feedback`, `button_message`, `to_agent_reply` — the
  shared model's objects.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import discord

from bot.model import ConversationKey, FeedbackEvent, FeedbackValue, InboundMessage, utcnow

__all__ = [
    "DM_WORKSPACE",
    "HANDOFF_TEXT",
    "PLATFORM",
    "AgentReply",
    "MessageFacts",
    "Place",
    "Placement",
    "ReactionFacts",
    "Routing",
    "Why",
    "button_feedback",
    "button_message",
    "content_missing",
    "conversation_key",
    "feedback_value",
    "from_bot",
    "is_agent",
    "is_agents_traffic",
    "message_facts",
    "placement",
    "reaction_facts",
    "reaction_feedback",
    "reply_ref",
    "strip_mentions",
    "to_agent_reply",
    "to_inbound",
    "why_answer",
]

PLATFORM = "discord"
#: The workspace of DM conversations (Discord's own URLs say "@me" for DMs).
DM_WORKSPACE = "@me"
#: What a click on "Talk to a person" says on the user's behalf (real handoff comes later).
HANDOFF_TEXT = "I'd like to talk to a person"

_USER_MESSAGE_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
#: Skin tones and the emoji presentation selector: 👍🏽 rates like 👍.
_EMOJI_MODIFIERS = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")


class Place(enum.StrEnum):
    """Where a message was posted."""

    DM = "dm"
    CHANNEL = "channel"  # a server text or announcement channel: threads can start from it
    THREAD = "thread"  # a thread, including a forum post
    OTHER = "other"  # a voice or stage channel's chat, or a channel the bot cannot see


class Why(enum.StrEnum):
    """Why the bot answers a message."""

    DM = "dm"
    MENTION = "mention"
    SUPPORT_CHANNEL = "support_channel"
    FORUM_POST = "forum_post"
    THREAD = "thread"


class Placement(enum.StrEnum):
    """Where an answer goes."""

    NEW_THREAD = "new_thread"  # a thread started from the question
    REPLY = "reply"  # a reply to the question, in its channel
    SAME_CHANNEL = "same_channel"  # the DM or thread the question is in


@dataclass(frozen=True, slots=True)
class Routing:
    """The channel configuration `why_answer` and `placement` follow."""

    support_channels: frozenset[int] = frozenset()
    forum_channels: frozenset[int] = frozenset()
    agents_channel: int | None = None
    threads: bool = True
    agent_users: frozenset[int] = frozenset()
    agent_role: int | None = None


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the bot needs to know about a message, read off discord.py's objects.

    Attributes:
        message_id: the message.
        channel_id: where it was posted (the thread's id for a thread).
        guild_id: its server; None in a DM.
        parent_id: for a thread, the channel it belongs to.
        place: what kind of channel `channel_id` is.
        in_forum: a thread whose parent is a forum channel (a forum post).
        author_id: who wrote it.
        author_name: their display name.
        author_is_bot: a bot account, a webhook or a system message.
        content: the text as delivered ("" when the Message Content intent is off).
        mentions_me: the bot (or its managed role) is mentioned.
        has_attachments: files, embeds or stickers came with it.
        user_message: a message a person wrote (not a pin, join or thread notice).
        sent_at: when Discord received it.
        edited_at: when it was last edited, if ever.
        my_role_id: the bot's managed role in the server, to strip its mention.
        me_id: the bot's user id, to strip its mention.
        author_roles: the author's roles in the server (none in a DM).
    """

    message_id: int
    channel_id: int
    guild_id: int | None
    parent_id: int | None
    place: Place
    author_id: int
    author_name: str
    author_is_bot: bool
    content: str
    mentions_me: bool
    has_attachments: bool = False
    user_message: bool = True
    in_forum: bool = False
    sent_at: datetime | None = None
    edited_at: datetime | None = None
    my_role_id: int | None = None
    me_id: int | None = None
    author_roles: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ReactionFacts:
    """A reaction added or removed (raw gateway event)."""

    message_id: int
    channel_id: int
    guild_id: int | None
    user_id: int
    user_is_bot: bool
    emoji_id: int | None
    emoji_name: str | None
    added: bool
    message_author_id: int | None = None


@dataclass(frozen=True, slots=True)
class AgentReply:
    """An agent's message in the thread of a handoff card, for the relay to pass on.

    Attributes:
        card_ref: ``"{agents channel}:{card message}"``, as `post_handoff_card` returned it (the
            card's message id is also its thread's id).
        conversation: the customer's conversation the card is about, when known.
        user: the agent's Discord user id.
        user_name: their display name.
        text: what they wrote.
        message_id: their message's id.
        sent_at: when they wrote it.
    """

    card_ref: str
    conversation: ConversationKey | None
    user: str
    user_name: str
    text: str
    message_id: str
    sent_at: datetime


# Reading discord.py objects --------------------------------------------------------------------


def _place(channel: object) -> tuple[Place, int | None, bool]:
    if isinstance(channel, discord.DMChannel | discord.GroupChannel):
        return Place.DM, None, False
    if isinstance(channel, discord.Thread):
        return Place.THREAD, channel.parent_id, isinstance(channel.parent, discord.ForumChannel)
    if isinstance(channel, discord.TextChannel):
        return Place.CHANNEL, None, False
    return Place.OTHER, None, False


def message_facts(
    message: discord.Message,
    *,
    me_id: int,
    my_role_id: int | None = None,
    channel: object | None = None,
) -> MessageFacts:
    """The facts of a discord.py message.

    Args:
        message: as discord.py parsed it.
        me_id: the bot's user id.
        my_role_id: the bot's managed role in the message's server, if any.
        channel: the message's channel when the caller resolved it better than discord.py did
            (a thread discord.py had not cached arrives as a `PartialMessageable`).
    """
    where = channel if channel is not None else message.channel
    place, parent_id, in_forum = _place(where)
    if place is Place.OTHER and message.guild is None:
        place = Place.DM
    mentioned = {user.id for user in message.mentions} | set(message.raw_mentions)
    role_mentioned = my_role_id is not None and my_role_id in message.raw_role_mentions
    author = message.author
    return MessageFacts(
        message_id=message.id,
        channel_id=message.channel.id,
        guild_id=message.guild.id if message.guild is not None else None,
        parent_id=parent_id,
        place=place,
        in_forum=in_forum,
        author_id=author.id,
        author_name=author.display_name,
        author_is_bot=author.bot or author.system or message.webhook_id is not None,
        content=message.content,
        mentions_me=me_id in mentioned or role_mentioned,
        has_attachments=bool(message.attachments or message.embeds or message.stickers),
        user_message=message.type in _USER_MESSAGE_TYPES,
        sent_at=message.created_at,
        edited_at=message.edited_at,
        my_role_id=my_role_id,
        me_id=me_id,
        author_roles=(
            tuple(role.id for role in author.roles) if isinstance(author, discord.Member) else ()
        ),
    )


def reaction_facts(event: discord.RawReactionActionEvent) -> ReactionFacts:
    """The facts of a raw reaction add/remove event."""
    member = event.member
    return ReactionFacts(
        message_id=event.message_id,
        channel_id=event.channel_id,
        guild_id=event.guild_id,
        user_id=event.user_id,
        user_is_bot=bool(member is not None and member.bot),
        emoji_id=event.emoji.id,
        emoji_name=event.emoji.name,
        added=event.event_type == "REACTION_ADD",
        message_author_id=event.message_author_id,
    )


# Decisions -------------------------------------------------------------------------------------


def from_bot(author_id: int, author_is_bot: bool, me_id: int | None) -> bool:
    """Whether traffic comes from this bot or another bot: such traffic is never handled."""
    return author_is_bot or (me_id is not None and author_id == me_id)


def is_agents_traffic(facts: MessageFacts, routing: Routing) -> bool:
    """A message in the agents' channel or one of its threads: never a customer question."""
    agents = routing.agents_channel
    return agents is not None and agents in (facts.channel_id, facts.parent_id)


def is_agent(facts: MessageFacts, routing: Routing) -> bool:
    """Whether the author is a human agent: a configured agent id, or a member of the agents'
    role. Only a server thread can hold an agent's reply to a customer (a DM has no third
    person; a question in a channel is answered in its own thread or as a reply)."""
    if facts.place is not Place.THREAD or facts.guild_id is None:
        return False
    if facts.author_id in routing.agent_users:
        return True
    return routing.agent_role is not None and routing.agent_role in facts.author_roles


def is_forum_post(facts: MessageFacts, routing: Routing) -> bool:
    """The opening message of a post in a configured forum (a post's id is its thread's id)."""
    return (
        facts.place is Place.THREAD
        and facts.parent_id in routing.forum_channels
        and facts.message_id == facts.channel_id
    )


def why_answer(facts: MessageFacts, routing: Routing, takes_part: bool = False) -> Why | None:
    """Whether the bot answers this message, and why; None to stay silent.

    Args:
        facts: the message.
        routing: the configured channels.
        takes_part: for a thread, whether the bot has a conversation there
            (`Engine.takes_part_in(conversation_key(facts))`).
    """
    # Bots' traffic never gets here: the client drops it centrally (see `from_bot`).
    if not facts.user_message:
        return None
    if facts.place is Place.DM:
        return Why.DM
    if is_agents_traffic(facts, routing):
        return None
    if is_forum_post(facts, routing):
        return Why.FORUM_POST
    if facts.place is Place.THREAD and takes_part:
        return Why.THREAD
    if facts.place is not Place.THREAD and facts.channel_id in routing.support_channels:
        return Why.SUPPORT_CHANNEL
    if facts.mentions_me:
        return Why.MENTION
    return None


def content_missing(facts: MessageFacts) -> bool:
    """No text and nothing attached: what arrives when the Message Content intent is off."""
    return not facts.content.strip() and not facts.has_attachments


def conversation_key(facts: MessageFacts) -> ConversationKey:
    """The conversation a message belongs to.

    A DM is one conversation; a thread (or forum post) is one conversation; a question in a
    channel starts its own, keyed by the question's id, which is also the id of the thread
    Discord starts from it.
    """
    if facts.place is Place.DM or facts.guild_id is None:
        return ConversationKey(PLATFORM, DM_WORKSPACE, str(facts.channel_id))
    guild = str(facts.guild_id)
    if facts.place is Place.THREAD and facts.parent_id is not None:
        return ConversationKey(PLATFORM, guild, str(facts.parent_id), str(facts.channel_id))
    return ConversationKey(PLATFORM, guild, str(facts.channel_id), str(facts.message_id))


def placement(facts: MessageFacts, routing: Routing) -> Placement:
    """Where the answer to a message goes."""
    if facts.place in (Place.DM, Place.THREAD):
        return Placement.SAME_CHANNEL
    if facts.place is Place.CHANNEL and routing.threads:
        return Placement.NEW_THREAD
    return Placement.REPLY


def strip_mentions(text: str, me_id: int | None, my_role_id: int | None = None) -> str:
    """The text without the bot's own mention (``<@id>``, ``<@!id>``, or its role's ``<@&id>``)."""
    if me_id is not None:
        text = re.sub(rf"<@!?{me_id}>", " ", text)
    if my_role_id is not None:
        text = text.replace(f"<@&{my_role_id}>", " ")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def to_inbound(facts: MessageFacts, why: Why, *, revision: str = "") -> InboundMessage:
    """The message for the engine.

    Args:
        facts: the message.
        why: why it is answered (kept in `raw` for the logs).
        revision: "" for a new message; the edit's timestamp for an edit.
    """
    key = conversation_key(facts)
    return InboundMessage(
        platform=PLATFORM,
        workspace=key.workspace,
        channel=key.channel,
        thread=key.thread,
        user=str(facts.author_id),
        message_id=str(facts.message_id),
        text=strip_mentions(facts.content, facts.me_id, facts.my_role_id),
        addressed=True,
        sent_at=facts.sent_at or utcnow(),
        revision=revision,
        raw={
            "guild_id": facts.guild_id,
            "channel_id": facts.channel_id,
            "parent_id": facts.parent_id,
            "message_id": facts.message_id,
            "why": why.value,
        },
    )


def reply_ref(channel_id: int, message_id: int) -> str:
    """How a posted reply is remembered: `"{channel_id}:{message_id}"`."""
    return f"{channel_id}:{message_id}"


def _emoji_key(name: str) -> str:
    return unicodedata.normalize("NFC", _EMOJI_MODIFIERS.sub("", name))


def feedback_value(
    emoji_id: int | None,
    emoji_name: str | None,
    up: Iterable[str],
    down: Iterable[str],
) -> FeedbackValue | None:
    """What a reaction says about an answer: up, down, or nothing (None).

    Args:
        emoji_id: a custom emoji's id; None for a unicode emoji.
        emoji_name: the unicode emoji, or the custom emoji's name.
        up: configured "up" emoji (unicode, or custom emoji ids as strings).
        down: configured "down" emoji.
    """
    if emoji_id is not None:
        key = str(emoji_id)
        up_keys, down_keys = set(up), set(down)
    elif emoji_name:
        key = _emoji_key(emoji_name)
        up_keys = {_emoji_key(e) for e in up}
        down_keys = {_emoji_key(e) for e in down}
    else:
        return None
    if key in up_keys:
        return FeedbackValue.UP
    if key in down_keys:
        return FeedbackValue.DOWN
    return None


def reaction_feedback(
    facts: ReactionFacts, reply_id: str, value: FeedbackValue, nonce: str
) -> FeedbackEvent:
    """A reaction on an answer as feedback; a removed reaction withdraws it (value None).

    Args:
        facts: the reaction.
        reply_id: the reply the reacted message belongs to.
        value: what the emoji means.
        nonce: tells this event apart from an identical later one: the gateway gives reactions
            no id, and adding, removing and adding again must count each time.
    """
    emoji = str(facts.emoji_id) if facts.emoji_id is not None else (facts.emoji_name or "")
    action = "add" if facts.added else "remove"
    return FeedbackEvent(
        platform=PLATFORM,
        reply_id=reply_id,
        user=str(facts.user_id),
        value=value if facts.added else None,
        event_id=f"reaction:{facts.message_id}:{facts.user_id}:{emoji}:{action}:{nonce}",
    )


def button_feedback(up: bool, reply_id: str, user_id: int, interaction_id: int) -> FeedbackEvent:
    """A click on 👍 (`up`) or 👎 as feedback; the interaction id de-duplicates it."""
    return FeedbackEvent(
        platform=PLATFORM,
        reply_id=reply_id,
        user=str(user_id),
        value=FeedbackValue.UP if up else FeedbackValue.DOWN,
        event_id=f"interaction:{interaction_id}",
    )


def button_message(
    key: ConversationKey, user_id: int, interaction_id: int, text: str
) -> InboundMessage:
    """A button click that speaks for the user ("Talk to a person", a clarify choice)."""
    return InboundMessage(
        platform=PLATFORM,
        workspace=key.workspace,
        channel=key.channel,
        thread=key.thread,
        user=str(user_id),
        message_id=f"interaction:{interaction_id}",
        text=text,
        addressed=True,
        raw={"interaction_id": interaction_id},
    )


def to_agent_reply(facts: MessageFacts, conversation: ConversationKey | None) -> AgentReply:
    """An agent's message in a handoff card's thread."""
    return AgentReply(
        card_ref=reply_ref(facts.parent_id or 0, facts.channel_id),
        conversation=conversation,
        user=str(facts.author_id),
        user_name=facts.author_name,
        text=facts.content,
        message_id=str(facts.message_id),
        sent_at=facts.sent_at or utcnow(),
    )
