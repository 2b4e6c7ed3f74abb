"""Wire shapes of the Discord gateway and REST API that this adapter sends, reads or fakes.

Only the fields the bot (or the local fake Discord in the tests) uses are typed; Discord sends more.
Ids ("snowflakes") travel as strings. Reference: https://discord.com/developers/docs — Gateway
Events, Channel, Message, Interactions.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "ActionRowPayload",
    "AllowedMentionsPayload",
    "ApplicationPayload",
    "AttachmentPayload",
    "ButtonPayload",
    "ChannelPayload",
    "ComponentDataPayload",
    "CreateMessagePayload",
    "EmbedAuthorPayload",
    "EmbedFieldPayload",
    "EmbedFooterPayload",
    "EmbedPayload",
    "GatewayBotPayload",
    "GatewayFrame",
    "GuildCreatePayload",
    "HelloPayload",
    "IdentifyPayload",
    "InteractionCallbackPayload",
    "InteractionPayload",
    "MemberPayload",
    "MessagePayload",
    "MessageReferencePayload",
    "PartialEmojiPayload",
    "ReactionEventPayload",
    "ReadyPayload",
    "ResumePayload",
    "SessionStartLimitPayload",
    "Snowflake",
    "StartThreadPayload",
    "ThreadMetadataPayload",
    "UnavailableGuildPayload",
    "UserPayload",
]

Snowflake = str

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types)
GUILD_TEXT: Literal[0] = 0
DM: Literal[1] = 1
GUILD_ANNOUNCEMENT: Literal[5] = 5
PUBLIC_THREAD: Literal[11] = 11
GUILD_FORUM: Literal[15] = 15

# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes)
OP_DISPATCH: Literal[0] = 0
OP_HEARTBEAT: Literal[1] = 1
OP_IDENTIFY: Literal[2] = 2
OP_RESUME: Literal[6] = 6
OP_RECONNECT: Literal[7] = 7
OP_INVALID_SESSION: Literal[9] = 9
OP_HELLO: Literal[10] = 10
OP_HEARTBEAT_ACK: Literal[11] = 11

# Component types and button styles.
ACTION_ROW: Literal[1] = 1
BUTTON: Literal[2] = 2


class UserPayload(TypedDict):
    id: Snowflake
    username: str
    discriminator: str
    avatar: str | None
    global_name: NotRequired[str | None]
    bot: NotRequired[bool]


class MemberPayload(TypedDict):
    """A guild member; inside MESSAGE_CREATE it comes without `user` (that is `author`)."""

    roles: list[Snowflake]
    joined_at: str
    deaf: bool
    mute: bool
    flags: int
    nick: NotRequired[str | None]
    user: NotRequired[UserPayload]


class AttachmentPayload(TypedDict):
    id: Snowflake
    filename: str
    size: int
    url: str
    proxy_url: str
    content_type: NotRequired[str]


class MessageReferencePayload(TypedDict):
    message_id: Snowflake
    channel_id: NotRequired[Snowflake]
    guild_id: NotRequired[Snowflake]
    fail_if_not_exists: NotRequired[bool]


class EmbedFieldPayload(TypedDict):
    name: str
    value: str
    inline: NotRequired[bool]


class EmbedFooterPayload(TypedDict):
    text: str


class EmbedAuthorPayload(TypedDict):
    name: str
    url: NotRequired[str]


class EmbedPayload(TypedDict, total=False):
    """A rich embed. Limits: title 256, description 4,096, 25 fields (name 256, value 1,024),
    footer 2,048, author name 256, and 6,000 characters in all."""

    type: Literal["rich"]
    title: str
    description: str
    url: str
    color: int
    fields: list[EmbedFieldPayload]
    footer: EmbedFooterPayload
    author: EmbedAuthorPayload
    timestamp: str


class PartialEmojiPayload(TypedDict):
    """`id` is None for a unicode emoji, whose `name` is the emoji itself."""

    id: Snowflake | None
    name: str | None
    animated: NotRequired[bool]


class ButtonPayload(TypedDict):
    type: Literal[2]
    style: int
    label: NotRequired[str]
    custom_id: NotRequired[str]
    url: NotRequired[str]
    emoji: NotRequired[PartialEmojiPayload]
    disabled: NotRequired[bool]


class ActionRowPayload(TypedDict):
    type: Literal[1]
    components: list[ButtonPayload]


class MessagePayload(TypedDict):
    """A message as MESSAGE_CREATE / MESSAGE_UPDATE and `POST /channels/{id}/messages` give it."""

    id: Snowflake
    channel_id: Snowflake
    author: UserPayload
    content: str
    timestamp: str
    edited_timestamp: str | None
    tts: bool
    mention_everyone: bool
    mentions: list[UserPayload]
    mention_roles: list[Snowflake]
    attachments: list[AttachmentPayload]
    embeds: list[EmbedPayload]
    pinned: bool
    type: int
    guild_id: NotRequired[Snowflake]
    member: NotRequired[MemberPayload]
    flags: NotRequired[int]
    components: NotRequired[list[ActionRowPayload]]
    message_reference: NotRequired[MessageReferencePayload]
    webhook_id: NotRequired[Snowflake]


class ThreadMetadataPayload(TypedDict):
    archived: bool
    auto_archive_duration: int
    archive_timestamp: str
    locked: bool
    create_timestamp: NotRequired[str]


class ChannelPayload(TypedDict):
    """A guild channel, a thread or a DM channel (the fields present depend on `type`)."""

    id: Snowflake
    type: int
    guild_id: NotRequired[Snowflake]
    name: NotRequired[str]
    position: NotRequired[int]
    parent_id: NotRequired[Snowflake | None]
    permission_overwrites: NotRequired[list[Any]]
    owner_id: NotRequired[Snowflake]
    thread_metadata: NotRequired[ThreadMetadataPayload]
    message_count: NotRequired[int]
    member_count: NotRequired[int]
    newly_created: NotRequired[bool]
    recipients: NotRequired[list[UserPayload]]
    last_message_id: NotRequired[Snowflake | None]


class UnavailableGuildPayload(TypedDict):
    id: Snowflake
    unavailable: bool


class GuildCreatePayload(TypedDict):
    id: Snowflake
    name: str
    unavailable: bool
    member_count: int
    owner_id: Snowflake
    channels: list[ChannelPayload]
    threads: list[ChannelPayload]
    members: list[MemberPayload]
    roles: list[dict[str, Any]]
    features: list[str]
    joined_at: str


class ApplicationPayload(TypedDict):
    """`GET /oauth2/applications/@me`, and (id and flags only) READY's `application`."""

    id: Snowflake
    flags: int
    name: NotRequired[str]
    description: NotRequired[str]
    icon: NotRequired[str | None]
    bot_public: NotRequired[bool]
    bot_require_code_grant: NotRequired[bool]
    verify_key: NotRequired[str]
    owner: NotRequired[UserPayload]


class ReadyPayload(TypedDict):
    v: int
    user: UserPayload
    guilds: list[UnavailableGuildPayload]
    session_id: str
    resume_gateway_url: str
    application: ApplicationPayload
    shard: NotRequired[list[int]]


class ReactionEventPayload(TypedDict):
    """MESSAGE_REACTION_ADD (with `member` in guilds) and MESSAGE_REACTION_REMOVE."""

    user_id: Snowflake
    channel_id: Snowflake
    message_id: Snowflake
    emoji: PartialEmojiPayload
    burst: bool
    type: int
    guild_id: NotRequired[Snowflake]
    member: NotRequired[MemberPayload]
    message_author_id: NotRequired[Snowflake]


class ComponentDataPayload(TypedDict):
    custom_id: str
    component_type: int


class InteractionPayload(TypedDict):
    """INTERACTION_CREATE of type 3 (a message component: our buttons)."""

    id: Snowflake
    application_id: Snowflake
    type: int
    data: ComponentDataPayload
    token: str
    version: int
    channel_id: Snowflake
    channel: ChannelPayload
    message: MessagePayload
    app_permissions: str
    locale: str
    authorizing_integration_owners: dict[str, Snowflake]
    attachment_size_limit: int
    guild_id: NotRequired[Snowflake]
    member: NotRequired[MemberPayload]
    user: NotRequired[UserPayload]
    context: NotRequired[int]


class InteractionCallbackPayload(TypedDict):
    """`POST /interactions/{id}/{token}/callback`: type 4 message, 5 deferred message,
    6 deferred update (no visible change), 7 update the message."""

    type: int
    data: NotRequired[dict[str, Any]]


class HelloPayload(TypedDict):
    heartbeat_interval: int


class IdentifyPayload(TypedDict):
    token: str
    intents: int
    properties: dict[str, str]
    compress: NotRequired[bool]
    large_threshold: NotRequired[int]
    shard: NotRequired[list[int]]


class ResumePayload(TypedDict):
    token: str
    session_id: str
    seq: int | None


class GatewayFrame(TypedDict):
    """One gateway message: `op`, `d`ata, `s`equence (dispatches only) and `t`ype (event name)."""

    op: int
    d: Any
    s: int | None
    t: str | None


class SessionStartLimitPayload(TypedDict):
    total: int
    remaining: int
    reset_after: int
    max_concurrency: int


class GatewayBotPayload(TypedDict):
    url: str
    shards: int
    session_start_limit: SessionStartLimitPayload


class StartThreadPayload(TypedDict):
    """`POST /channels/{channel}/messages/{message}/threads`: the thread's id is the message's."""

    name: str
    auto_archive_duration: NotRequired[int]
    rate_limit_per_user: NotRequired[int | None]


class AllowedMentionsPayload(TypedDict, total=False):
    parse: list[str]
    users: list[Snowflake]
    roles: list[Snowflake]
    replied_user: bool


class CreateMessagePayload(TypedDict, total=False):
    """`POST /channels/{id}/messages`."""

    content: str
    embeds: list[EmbedPayload]
    components: list[ActionRowPayload]
    message_reference: MessageReferencePayload
    allowed_mentions: AllowedMentionsPayload
    flags: int
