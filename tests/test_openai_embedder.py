"""OpenAIEmbedder end to end: the real ``openai`` SDK against LoopbackOpenAI on 127.0.0.1, faults injected."""

from __future__ import annotations

import itertools
import logging
import random
import re
import threading
import traceback
from collections.abc import Callable, Iterator

import bpe_openai
import numpy as np
import openai
import pytest

from ragline.embedders.base import Embedder
from ragline.embedders.openai_embedder import KEYLESS_PLACEHOLDER, OpenAIEmbedder
from ragline.errors import ConfigError, EmbeddingError
from ragline.testing.openai_server import MAX_REQUEST_TOKENS, Fault, LoopbackOpenAI

SHORT_TIMEOUT_S = 0.5
"""For tests whose server holds requests (fault "timeout"); others allow 10 s, so a busy machine adds no retries."""
ALL_FAULTS: tuple[Fault, ...] = (429, 500, 503, "timeout", "reset", "malformed")
TEXTS = [f"Boundary layer report {i}: pressure on a swept wing at Mach {i % 5}.{i % 7}" for i in range(40)]

MakeEmbedder = Callable[..., OpenAIEmbedder]


@pytest.fixture(autouse=True)
def fast_sdk_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's backoff constants (0.5 s doubling to 8 s) shrunk, so retried tests take milliseconds."""
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01)
    monkeypatch.setattr(openai._base_client, "MAX_RETRY_DELAY", 0.02)


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(retry_after_s=0.01, stall_s=3 * SHORT_TIMEOUT_S) as loopback:
        yield loopback


@pytest.fixture
def make_embedder(server: LoopbackOpenAI) -> Iterator[MakeEmbedder]:
    """OpenAIEmbedders on the loopback server with short backoffs; closed after the test."""
    made: list[OpenAIEmbedder] = []

    def make(**settings: object) -> OpenAIEmbedder:
        options: dict[str, object] = {
            "api_key": server.api_key,
            "base_url": server.base_url,
            "timeout_s": 10.0,
            "retry_backoff_s": 0.01,
        }
        embedder = OpenAIEmbedder(**{**options, **settings})  # type: ignore[arg-type]
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        embedder.close()


# vectors


def test_vectors_are_unit_float32_rows_in_input_order(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder()
    assert isinstance(embedder, Embedder)
    server.shuffle_answers = True  # rows must follow ``index``, not the order of ``data``
    vectors = embedder.embed(TEXTS)

    assert vectors.shape == (len(TEXTS), 1536) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    one_by_one = np.vstack([embedder.embed([text]) for text in TEXTS[:5]])
    np.testing.assert_array_equal(vectors[:5], one_by_one)


def test_similar_texts_get_similar_vectors(make_embedder: MakeEmbedder) -> None:
    cat, kitten, shock = make_embedder().embed(
        ["the cat sat on the mat", "a cat sat on a mat", "oblique shock waves in supersonic flow"]
    )
    assert cat @ kitten > 0.5 > abs(cat @ shock)


def test_model_id_and_dimension_follow_model_and_dimensions(make_embedder: MakeEmbedder) -> None:
    assert (make_embedder().model_id, make_embedder().dimension) == ("openai/text-embedding-3-small", 1536)
    assert make_embedder(model="text-embedding-3-large").dimension == 3072
    assert make_embedder(model="text-embedding-ada-002").dimension == 1536
    shortened = make_embedder(model="text-embedding-3-large", dimensions=256)
    assert (shortened.model_id, shortened.dimension) == ("openai/text-embedding-3-large@256", 256)


def test_dimensions_shorten_and_renormalise_the_native_vector(
    server: LoopbackOpenAI, make_embedder: MakeEmbedder
) -> None:
    native = make_embedder(model="text-embedding-3-large").embed(TEXTS[:3])
    short = make_embedder(model="text-embedding-3-large", dimensions=256).embed(TEXTS[:3])

    assert short.shape == (3, 256) and server.requests[-1].dimensions == 256
    expected = native[:, :256] / np.linalg.norm(native[:, :256], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)


def test_without_a_key_a_base_url_server_gets_a_placeholder() -> None:
    with LoopbackOpenAI(api_key=KEYLESS_PLACEHOLDER) as keyless:
        embedder = OpenAIEmbedder(api_key=None, base_url=keyless.base_url)
        assert embedder.embed(TEXTS[:1]).shape == (1, 1536)
        embedder.close()


def test_any_model_name_works_and_its_dimension_is_discovered_once(
    server: LoopbackOpenAI, make_embedder: MakeEmbedder
) -> None:
    embedder = make_embedder(model="acme/embed-v1")

    assert embedder.dimension == server.unknown_model_dimension
    assert embedder.dimension == server.unknown_model_dimension
    assert len(server.requests) == 1 and server.requests[0].model == "acme/embed-v1"
    assert embedder.embed(TEXTS[:2]).shape == (2, server.unknown_model_dimension)


@pytest.mark.parametrize(
    "settings",
    [
        {"api_key": None, "base_url": None},
        {"model": "text-embedding-ada-002", "dimensions": 256},
        {"model": "text-embedding-3-small", "dimensions": 2000},
        {"max_batch_inputs": 2049},
        {"max_batch_tokens": 300_001},
        {"timeout_s": 0},
    ],
)
def test_settings_the_api_would_refuse_are_config_errors(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        OpenAIEmbedder(**{"api_key": "sk-x", **settings})  # type: ignore[arg-type]


# batching, truncation, tokens


def test_batches_stop_at_2048_inputs(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    texts = [f"note {i}" for i in range(5000)]
    vectors = make_embedder().embed(texts)

    assert [request.inputs for request in server.requests] == [2048, 2048, 904]
    np.testing.assert_array_equal(vectors[4321], make_embedder().embed([texts[4321]])[0])


def test_batches_stop_at_300k_tokens(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    words = ["pressure", "wing", "shock", "boundary", "layer", "heat", "flow", "nozzle"]
    rng = random.Random(0)
    texts = [" ".join(f"{rng.choice(words)}{rng.randrange(100)}" for _ in range(3000)) for _ in range(100)]
    embedder = make_embedder()
    expected = [embedder.count_tokens(text) for text in texts]

    vectors = embedder.embed(texts)

    requests = server.requests
    assert vectors.shape == (100, 1536) and len(requests) > 1
    assert [n for request in requests for n in request.input_tokens] == expected
    assert all(request.tokens <= MAX_REQUEST_TOKENS for request in requests)
    for request, following in itertools.pairwise(requests):  # each batch is as full as the budget allows
        assert request.tokens + following.input_tokens[0] > MAX_REQUEST_TOKENS


def test_lowered_token_budget_packs_greedily(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder(max_batch_tokens=40)
    texts = [" ".join(["word"] * n) for n in (15, 15, 15, 50, 5)]
    counts = [embedder.count_tokens(text) for text in texts]
    assert counts == [15, 15, 15, 50, 5]

    embedder.embed(texts)

    assert [request.input_tokens for request in server.requests] == [(15, 15), (15,), (50,), (5,)]


def test_an_over_long_input_is_cut_to_its_first_8191_tokens(
    server: LoopbackOpenAI, make_embedder: MakeEmbedder
) -> None:
    embedder = make_embedder()
    long_text = "".join(f"w{i} " for i in range(6000))
    assert embedder.count_tokens(long_text) > 8191

    vectors = embedder.embed([long_text, "short"])

    assert server.requests[-1].input_tokens == (8191, 1)
    cl100k = bpe_openai.get_encoding("cl100k_base")
    first_8191 = cl100k.decode(cl100k.encode_ordinary(long_text)[:8191])
    np.testing.assert_array_equal(vectors[0], embedder.embed([first_8191])[0])


def test_truncation_never_splits_a_character(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder()
    assert embedder.count_tokens("鑫") == 3

    vector = embedder.embed(["鑫" * 3000])  # 9,000 tokens; 8,191 would end inside a character

    assert server.requests[-1].input_tokens == (8190,)
    np.testing.assert_array_equal(vector, embedder.embed(["鑫" * 2730]))


def test_empty_strings_are_refused_before_any_request(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    with pytest.raises(EmbeddingError, match="input 1 is an empty string"):
        make_embedder().embed(["fine", ""])
    assert server.requests == []


def test_count_tokens_and_usage_match_the_server(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    texts = [
        "Hello, world!",
        "naïve café — déjà vu",
        "数据管道 🚀 emoji and CJK",
        "def f(x):\n    return x ** 2  # code\n",
        "<|endoftext|> is plain text here",
        "   leading and trailing spaces   ",
        *TEXTS,
    ]
    embedder = make_embedder(max_batch_inputs=7)

    embedder.embed(texts)

    assert [n for request in server.requests for n in request.input_tokens] == [
        embedder.count_tokens(text) for text in texts
    ]
    assert embedder.tokens_embedded == server.tokens_served == sum(embedder.count_tokens(text) for text in texts)
    assert embedder.requests_sent == len(server.served) == 7
    assert embedder.retries == 0


def test_usage_counters_are_exact_under_concurrent_calls(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder(max_batch_inputs=3)
    threads = [threading.Thread(target=embedder.embed, args=(TEXTS[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert embedder.tokens_embedded == server.tokens_served == sum(embedder.count_tokens(t) for t in TEXTS)
    assert embedder.requests_sent == len(server.served) == 4 * 4


# faults


@pytest.mark.parametrize("fault", ALL_FAULTS)
def test_each_fault_kind_is_retried(fault: Fault, server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    clean = make_embedder().embed(TEXTS[:4])
    server.clear_log()
    server.fail_next(2, fault)
    embedder = make_embedder(timeout_s=SHORT_TIMEOUT_S)

    vectors = embedder.embed(TEXTS[:4])

    np.testing.assert_array_equal(vectors, clean)
    assert [request.fault for request in server.requests] == [fault, fault, None]
    assert (embedder.retries, embedder.requests_sent) == (2, 1)


def test_retry_after_is_honoured(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    server.retry_after_s = 0.3  # far above the shrunk SDK backoff
    server.fail_next(1, 429)

    make_embedder().embed(TEXTS[:1])

    first, second = server.requests
    assert second.received_at - first.received_at >= 0.3


def test_30_percent_faults_of_every_kind_lose_and_repeat_nothing(
    server: LoopbackOpenAI, make_embedder: MakeEmbedder
) -> None:
    texts = [f"{text} (copy {n})" for n in range(5) for text in TEXTS]  # 200 texts
    clean = make_embedder().embed(texts)
    server.clear_log()
    server.inject_faults(0.3, ALL_FAULTS, seed=2)
    embedder = make_embedder(max_batch_inputs=2, timeout_s=SHORT_TIMEOUT_S)

    vectors = embedder.embed(texts)

    np.testing.assert_array_equal(vectors, clean)
    faults = [request.fault for request in server.requests if request.fault is not None]
    assert set(faults) == set(ALL_FAULTS)
    assert sum(request.inputs for request in server.served) == len(texts)  # every batch answered exactly once
    assert embedder.requests_sent == len(server.served) == 100
    assert embedder.retries == len(faults) and len(server.requests) == 100 + len(faults)
    assert embedder.tokens_embedded == server.tokens_served


@pytest.mark.parametrize(
    ("fault", "reason"), [(500, "HTTP 500"), ("timeout", "no answer within"), ("malformed", "unreadable")]
)
def test_exhausted_retries_raise_embedding_error_without_the_key(
    fault: Fault,
    reason: str,
    server: LoopbackOpenAI,
    make_embedder: MakeEmbedder,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail_next(10, fault)
    embedder = make_embedder(max_retries=2, timeout_s=SHORT_TIMEOUT_S)

    with pytest.raises(EmbeddingError, match=reason) as raised:
        embedder.embed(TEXTS[:2])

    assert "after 2 retries" in str(raised.value)
    assert len(server.requests) == 3 and embedder.retries == 2 and embedder.tokens_embedded == 0
    _assert_key_nowhere(server.api_key, raised.value, caplog.text, *capsys.readouterr())


def test_a_refused_key_fails_at_once_without_echoing_it(
    server: LoopbackOpenAI,
    make_embedder: MakeEmbedder,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-proj-wrong-0123456789-abcdef"
    embedder = make_embedder(api_key=wrong_key)

    with pytest.raises(EmbeddingError, match="HTTP 401: the API key was refused") as raised:
        embedder.embed(TEXTS[:1])

    assert len(server.requests) == 1 and server.requests[0].status == 401  # not retried
    assert isinstance(raised.value, ConfigError)  # the user's setting: the CLI exits 2
    assert wrong_key[-4:] not in str(raised.value)  # not even the part OpenAI echoes
    _assert_key_nowhere(wrong_key, raised.value, caplog.text, *capsys.readouterr())


def _assert_key_nowhere(key: str, error: BaseException, logs: str, stdout: str, stderr: str) -> None:
    """The key is in no message: the error, its chained causes, the logs, stdout or stderr."""
    assert logs  # the SDK did log at DEBUG level
    everything = [str(error), repr(error), "".join(traceback.format_exception(error)), logs, stdout, stderr]
    assert not [text for text in everything if key in text]


# the server itself


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"input": ""}, "'$.input' is invalid"),
        ({"input": ["fine", ""]}, "'$.input' is invalid"),
        ({"input": ["x"] * 2049}, "max number of inputs is 2048"),
        ({"input": "word " * 8193}, "maximum context length is 8192 tokens"),
        ({"input": ["word " * 8000] * 38}, "max 300000 tokens per request"),
        ({"input": "x", "model": "text-embedding-ada-002", "dimensions": 8}, "does not support specifying dimensions"),
        ({"input": "x", "dimensions": 1537}, "Invalid value for 'dimensions'"),
    ],
)
def test_server_enforces_the_api_limits(server: LoopbackOpenAI, request_body: dict[str, object], message: str) -> None:
    client = openai.OpenAI(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError, match=re.escape(message)):
        client.embeddings.create(**{"model": "text-embedding-3-small", **request_body})  # type: ignore[arg-type]
    client.close()


def test_server_accepts_token_arrays_and_float_format(server: LoopbackOpenAI) -> None:
    client = openai.OpenAI(api_key=server.api_key, base_url=server.base_url, max_retries=0)
    as_text = client.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float")
    as_tokens = client.embeddings.create(model="text-embedding-3-small", input=[[15339, 1917]], encoding_format="float")
    client.close()

    assert as_text.usage.prompt_tokens == as_tokens.usage.prompt_tokens == 2
    np.testing.assert_allclose(as_text.data[0].embedding, as_tokens.data[0].embedding)


def test_latency_is_added_to_every_request(server: LoopbackOpenAI, make_embedder: MakeEmbedder) -> None:
    embedder = make_embedder()
    embedder.embed(TEXTS[:1])  # warm the client
    server.latency_s = 0.2
    server.clear_log()
    embedder.embed(TEXTS[:1])
    [request] = server.served
    assert request.answered_at - request.received_at >= 0.2  # the server's own clock
