"""Reading a follow-up in the light of the conversation so far.

"and for business accounts?" or "does it work offline?" mean little alone. When a message looks
like a follow-up, it is searched together with its context: the customer's previous question and
what the bot answered (which names the product or place under discussion); an entry must fit both
(`knowledge.retriever.Retriever.retrieve_follow_up`). The context is a `knowledge.types.Context`
of those two parts, so its vector can be made of theirs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from bot.model import ReplyKind, Role, Turn
from knowledge.types import Context, Entry

_LEADS = re.compile(
    r"^(and|also|but|or|so|what about|how about|same for|same with|what if|and if|"
    r"is that|is it|are they|does it|do they|can it|can they|will it)\b",
    re.IGNORECASE,
)
_ANAPHORA = re.compile(
    r"\b(it|its|they|them|their|that|this|those|these|there|one|ones|same)\b", re.IGNORECASE
)
_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

#: How much of the bot's last reply goes into the context; its opening names the topic.
BOT_CONTEXT_CHARS = 240


def looks_like_follow_up(text: str) -> bool:
    """Whether a message probably leans on what was said before."""
    words = _WORD.findall(text)
    if not words:
        return False
    if _LEADS.search(text.strip()):
        return True
    if len(words) <= 3:
        return True
    return len(words) <= 9 and bool(_ANAPHORA.search(text))


def context_for(
    history: Sequence[Turn], topic_of: Callable[[str], Entry | None] | None = None
) -> Context | None:
    """The context of the next message: the last customer question and what the bot said.

    Only an answer has a topic. A bot line known to be another kind of reply (a fallback, a
    question back, smalltalk, a handoff: `Turn.kind`) is the bot's own set wording, which says
    nothing of the subject, so the question stands alone.

    Args:
        history: the conversation so far, oldest first.
        topic_of: maps a bot reply's text to the knowledge-base entry it answered with, if
            any: the entry's question (else its title) is then the topic. Without one, or
            when it returns None, the reply's first sentence stands for the topic.
    """
    last_user: str | None = None
    last_bot: Turn | None = None
    for turn in reversed(history):
        if turn.role is Role.BOT and last_bot is None and last_user is None:
            last_bot = turn
        elif turn.role is Role.USER and last_user is None:
            last_user = turn.text
        if last_user is not None:
            break
    topic: str | None = None
    topic_entry: str | None = None
    if last_bot is not None and last_bot.text and last_bot.kind in (None, ReplyKind.ANSWER):
        entry = topic_of(last_bot.text) if topic_of else None
        if entry is not None and entry.question:
            topic, topic_entry = entry.question, entry.id
        elif entry is not None and entry.title:
            topic = entry.title
        else:
            topic = _SENTENCE.split(last_bot.text.strip(), maxsplit=1)[0][:BOT_CONTEXT_CHARS]
    context = Context(last_user or None, topic or None, topic_entry)
    return context if context.parts else None
