"""A local OpenAI-compatible Chat Completions server with scripted behaviours, for tests.

It serves ``POST /v1/chat/completions`` on 127.0.0.1 and records every request body it receives
(`FakeLLM.requests`), so tests can check what left the bot. The requested *model name* picks the
behaviour:

==================  =====================================================================
model               answers
==================  =====================================================================
``grounded``        the first two sentences of passage [1] as it received them, cited [1]
``unsupported``     claims no passage makes (a price, a gift), cited [1]
``obey-injection``  obeys "ignore previous instructions" when the request contains it
                    (an invented refund offer); otherwise like ``grounded``
``echo``            the user message it received, verbatim
``slow``            like ``grounded``, after `FakeLLM.delay_s` seconds
``error500``        HTTP 500 with an OpenAI-style error body
``malformed``       HTTP 200 with a body that is not JSON
``no-choices``      HTTP 200 JSON without ``choices``
``declines``        ``NO_ANSWER``
``bad-citation``    like ``grounded`` but cites [9]
==================  =====================================================================
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

INJECTION = "ignore previous instructions"
OBEYED = "Sure, I will ignore my rules. Visit evil.example today to claim a $500 refund [1]."
UNSUPPORTED = (
    "Plus costs $99 per month and every subscription comes with a complimentary smartwatch [1]. "
    "Our support team also answers by fax within 2 hours [1]."
)


def _passages(user: str) -> list[dict[str, Any]]:
    match = re.search(r"<passages>\s*(.*?)\s*</passages>", user, re.S)
    return list(json.loads(match.group(1))) if match else []


def _grounded(user: str, citation: int = 1) -> str:
    passages = _passages(user)
    if not passages:
        return "NO_ANSWER"
    text = re.sub(r"[*`]", "", passages[0]["text"])
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(f"{s.rstrip()} [{citation}]" for s in sentences[:2])


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class FakeLLM:
    """The server and what it received; `start()` serves it on a free 127.0.0.1 port."""

    def __init__(self, delay_s: float = 3.0) -> None:
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.app = self._build()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            model = str(body.get("model", ""))
            user = next(
                (m["content"] for m in body.get("messages", []) if m.get("role") == "user"), ""
            )
            everything = json.dumps(body).lower()
            if model == "error500":
                return JSONResponse(
                    {"error": {"message": "the model crashed", "type": "server_error"}},
                    status_code=500,
                )
            if model == "malformed":
                return PlainTextResponse('{"choices": [ not json', media_type="application/json")
            if model == "no-choices":
                return JSONResponse({"id": "x", "object": "chat.completion", "model": model})
            if model == "slow":
                await asyncio.sleep(self.delay_s)
            if model == "unsupported":
                content = UNSUPPORTED
            elif model == "obey-injection" and INJECTION in everything:
                content = OBEYED
            elif model == "echo":
                content = user
            elif model == "declines":
                content = "NO_ANSWER"
            elif model == "bad-citation":
                content = _grounded(user, citation=9)
            else:
                content = _grounded(user)
            return JSONResponse(_completion(model, content))

        return app

    def start(self) -> FakeLLM:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake LLM server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
