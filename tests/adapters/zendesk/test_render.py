"""Pure rendering: reply comments, handoff notes, transcripts."""

from __future__ import annotations

from adapters.zendesk import render
from adapters.zendesk.sentiment import Sentiment, SentimentScorer, label_for
from bot.model import Reply, Role, Source, Turn

SOURCE = Source("reset-password", 0.9, "Reset your password", "https://help.example/reset")


def test_an_answer_is_public_html_with_source_links() -> None:
    reply = Reply.answer("Click **Forgot password?**\nThen check your mail.", (SOURCE,), 0.9)
    comment = render.reply_comment(reply, author_id=9)
    assert comment == {
        "html_body": "<p>Click <strong>Forgot password?</strong><br />\nThen check your mail.</p>"
        "<p><strong>Sources</strong></p>"
        '<ul><li><a href="https://help.example/reset">Reset your password</a></li></ul>',
        "public": True,
        "author_id": 9,
    }


def test_markup_in_text_and_sources_is_escaped() -> None:
    evil = Source("x", 0.5, '<img src=x onerror="alert(1)">', "javascript:alert(1)")
    reply = Reply.answer("<script>alert(1)</script>", (evil,))
    html = render.reply_comment(reply, author_id=9)["html_body"]
    assert "<script>" not in html and "<img" not in html
    assert "javascript:" not in html
    assert "&lt;script&gt;" in html


def test_a_fallback_has_no_sources_and_a_clarification_lists_articles() -> None:
    fallback = render.reply_comment(Reply.fallback("Sorry."), author_id=9)["html_body"]
    assert fallback == "<p>Sorry.</p>"
    clarify = Reply.clarify("Which one?\n• Reset your password", (SOURCE, Source("b", 0.4, "B")))
    html = render.reply_comment(clarify, author_id=9)["html_body"]
    assert "Related articles" in html and 'href="https://help.example/reset"' in html
    assert ">B<" not in html  # no link, not listed again


def test_handoff_note() -> None:
    note = render.HandoffNote(
        reason="the customer asked for a person",
        question="How do I reset my password?",
        answer="Click **Forgot password?**",
        sources=(SOURCE,),
        sentiment=Sentiment(-0.61, "negative", "this is useless"),
        transcript=(Turn(Role.USER, "How do I reset my password?"), Turn(Role.BOT, "Click")),
    )
    comment = render.handoff_note(note, author_id=9)
    assert comment["public"] is False
    html = comment["html_body"]
    for expected in (
        "Reason: the customer asked for a person",
        "<strong>Question:</strong> How do I reset my password?",
        "<blockquote><p>Click <strong>Forgot password?</strong></p></blockquote>",
        "From these sources",
        "negative (-0.61 on a scale from -1 to +1)",
        "most negative: “this is useless”",
        "<strong>Customer:</strong> How do I reset my password?",
        "<strong>Bot:</strong> Click",
    ):
        assert expected in html


def test_handoff_note_without_an_answer() -> None:
    note = render.HandoffNote("r", None, None, (), None)
    assert "has not answered" in render.handoff_note(note, author_id=9)["html_body"]


def test_transcript_comment_is_private() -> None:
    comment = render.transcript_comment(
        [Turn(Role.USER, "a <b>"), Turn(Role.AGENT, "b")],
        customer="U1",
        platform="slack",
        author_id=9,
    )
    assert comment["public"] is False
    assert "a &lt;b&gt;" in comment["html_body"]
    assert "<strong>Agent:</strong> b" in comment["html_body"]


def test_sentiment_scores() -> None:
    scorer = SentimentScorer()
    assert scorer.score([]) is None
    angry = scorer.score(["This is useless, I am furious!", "reset password"])
    assert angry is not None and angry.label == "negative"
    assert angry.most_negative == "This is useless, I am furious!"
    happy = scorer.score(["Thanks, that was great!"])
    assert happy is not None and happy.label == "positive" and happy.most_negative is None
    assert label_for(0.0) == "neutral"
