"""The chat client (``ragline.retrieval.chat``) through the real ``openai`` SDK against the loopback chat server:
what it sends (``max_completion_tokens``, never ``max_tokens``; a temperature only to models that take one) and what
it reads back (``finish_reason`` "length" and "content_filter", ``message.refusal``), streamed and not."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from ragline.config import RaglineConfig
from ragline.errors import ChatError
from ragline.retrieval.chat import ChatClient, ChatSettings
from ragline.testing.chat_server import REFUSAL, LoopbackChat

ANSWER = "Overlap of 10 to 20 percent of the chunk size is a common starting point for most corpora [1]."
REASONING = "o3-mini"


@pytest.fixture(scope="module")
def running() -> Iterator[LoopbackChat]:
    with LoopbackChat() as server:
        yield server


@pytest.fixture
def server(running: LoopbackChat) -> LoopbackChat:
    running.clear()
    running.responder = lambda messages: ANSWER
    return running


def settings(server: LoopbackChat, model: str = "gpt-4o-mini", **options: object) -> ChatSettings:
    config = RaglineConfig(chat_model=model, chat_base_url=server.base_url, chat_api_key=server.api_key, **options)
    found = ChatSettings.from_config(config)
    assert found is not None
    return found


def ask(client: ChatClient, stream: bool, **options: object):  # type: ignore[no-untyped-def]
    deltas: list[str] = []
    done = client.complete("system", "user", on_delta=deltas.append if stream else None, **options)  # type: ignore[arg-type]
    assert "".join(deltas) == (done.text if stream else "")
    return done


@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_length_is_sent_as_max_completion_tokens(server: LoopbackChat, stream: bool) -> None:
    done = ask(ChatClient(settings(server)), stream, temperature=0.0, max_completion_tokens=200)
    (request,) = server.requests
    assert request.options["max_completion_tokens"] == 200 and "max_tokens" not in request.options
    assert request.options["temperature"] == 0.0
    assert (done.text, done.finish_reason, done.truncated, done.refusal) == (ANSWER, "stop", False, None)


def test_the_loopback_refuses_what_reasoning_models_refuse(server: LoopbackChat) -> None:
    raw = openai.OpenAI(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    for options, param, code in [
        ({"max_tokens": 10}, "max_tokens", "unsupported_parameter"),
        ({"temperature": 0.0}, "temperature", "unsupported_value"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            raw.chat.completions.create(model=REASONING, messages=messages, **options)  # type: ignore[call-overload]
        assert (refused.value.param, refused.value.code) == (param, code)
    fine = raw.chat.completions.create(model=REASONING, messages=messages, max_completion_tokens=10, temperature=1)
    assert fine.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_that_takes_no_temperature_is_sent_none(server: LoopbackChat, stream: bool) -> None:
    reasoning = settings(server, REASONING)
    assert not reasoning.sends_temperature and settings(server).sends_temperature
    done = ask(ChatClient(reasoning), stream, temperature=0.0, max_completion_tokens=200)
    (request,) = server.requests
    assert request.status == 200 and "temperature" not in request.options and done.text == ANSWER
    custom = settings(server, "my-model", chat_models_without_temperature=["my"])
    assert not custom.sends_temperature and settings(server, "o3", chat_models_without_temperature=[]).sends_temperature


def test_a_refused_temperature_is_named_with_the_setting_that_fixes_it(server: LoopbackChat) -> None:
    unlisted = settings(server, REASONING, chat_models_without_temperature=[])
    with pytest.raises(ChatError, match="temperature.*chat_models_without_temperature"):
        ChatClient(unlisted).complete("system", "user", temperature=0.0)
    assert [r.status for r in server.requests] == [400]  # a 400 is not retried


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_at_the_token_limit_is_truncated(server: LoopbackChat, stream: bool) -> None:
    done = ask(ChatClient(settings(server)), stream, max_completion_tokens=5)
    assert done.finish_reason == "length" and done.truncated and done.text == "Overlap of 10 to"
    assert done.output_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
def test_a_refusal_is_read_as_a_refusal(server: LoopbackChat, stream: bool) -> None:
    server.fail_next(1, "refusal")
    done = ask(ChatClient(settings(server)), stream)
    assert (done.text, done.refusal, done.finish_reason) == ("", REFUSAL, "stop")


@pytest.mark.parametrize("stream", [False, True])
def test_a_content_filter_stop_is_read_as_such(server: LoopbackChat, stream: bool) -> None:
    server.fail_next(1, "content_filter")
    done = ask(ChatClient(settings(server)), stream)
    assert done.finish_reason == "content_filter" and done.filtered and ANSWER.startswith(done.text)
    assert len(done.text) < len(ANSWER)


@pytest.mark.parametrize(
    ("fault", "named"),
    [("refusal", "refused"), ("content_filter", "content filter"), ("length", "token limit")],
)
def test_json_answers_name_what_stopped_them(server: LoopbackChat, fault: str, named: str) -> None:
    server.responder = lambda messages: '{"scores": [{"id": 1, "score": 7}]}'
    server.fail_next(1, fault)  # type: ignore[arg-type]
    with pytest.raises(ChatError, match=named):
        ChatClient(settings(server)).ask_json("system", "user")
