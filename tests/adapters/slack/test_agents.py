"""The agents' channel: handoff cards, and agents' replies under them passed to a callback."""

from __future__ import annotations

from adapters.slack.agents import AgentReply, HandoffCard, post_handoff_card
from bot.model import Role, Source, Turn
from tests.adapters.slack.conftest import AGENTS_CHANNEL, Harness, payload

CARD = HandoffCard(
    customer="U0CUST",
    platform="slack",
    question="<!channel> my export & sync are broken",
    tried="Open the note and choose **Export > PDF**.",
    sources=(Source("export-pdf", 0.8, "Export to PDF", "https://help.example/export"),),
    transcript=(
        Turn(Role.USER, "<!channel> my export & sync are broken"),
        Turn(Role.BOT, "Open the note and choose **Export > PDF**."),
        Turn(Role.USER, "That did not help"),
    ),
    conversation="slack:T0TEST:C0GENERAL:1700000100.000200",
)


async def test_a_handoff_card_is_posted_with_everything_an_agent_needs(slack: Harness) -> None:
    ref = await post_handoff_card(slack.adapter.client, AGENTS_CHANNEL, CARD)
    [message] = slack.emulator.messages[AGENTS_CHANNEL]
    assert ref == f"{AGENTS_CHANNEL}:{message['ts']}"
    [post] = slack.emulator.posts()
    shown = "\n".join(
        block["text"]["text"] if "text" in block else block["elements"][0]["text"]
        for block in post["blocks"]
    )
    assert "<@U0CUST>" in shown
    assert "&lt;!channel&gt; my export &amp; sync are broken" in shown
    assert "<!channel>" not in shown  # no one gets pinged by what a customer typed
    assert "*Export &gt; PDF*" in shown
    assert "<https://help.example/export|Export to PDF>" in shown
    assert "*Customer:* That did not help" in shown


async def test_agent_replies_in_a_card_thread_reach_the_callback_but_bot_posts_do_not(
    slack: Harness,
) -> None:
    received: list[AgentReply] = []

    async def collect(reply: AgentReply) -> None:
        received.append(reply)

    slack.adapter.on_agent_reply(collect)
    ref = await post_handoff_card(slack.adapter.client, AGENTS_CHANNEL, CARD)
    card_ts = ref.split(":", 1)[1]

    agent = payload("message_agents_thread")
    agent["event"]["thread_ts"] = card_ts
    await slack.send(agent)
    await slack.send(agent, headers={"X-Slack-Retry-Num": "1"})  # a retry: delivered once
    own = payload("message_self")
    own["event"].update(
        channel=AGENTS_CHANNEL, channel_type="channel", thread_ts=card_ts, ts="1700000801.1"
    )
    await slack.send(own)
    top_level = payload("message_agents_thread")
    top_level["event_id"] = "Ev0AGENT02"
    del top_level["event"]["thread_ts"]
    await slack.send(top_level)
    await slack.settle()

    assert received == [
        AgentReply(
            card_ref=ref,
            workspace="T0TEST",
            channel=AGENTS_CHANNEL,
            user="U0AGENT",
            text="Hi, I'm Ana from support & I'll take it from here.",
            ts="1700000800.001200",
        )
    ]
    # Nothing in the agents' channel is answered as a customer question.
    assert len(slack.emulator.posts()) == 1  # the card


async def test_mentions_in_the_agents_channel_are_not_answered(slack: Harness) -> None:
    mention = payload("app_mention")
    mention["event"]["channel"] = AGENTS_CHANNEL
    await slack.send(mention)
    await slack.settle()
    assert slack.emulator.posts() == []
