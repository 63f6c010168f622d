"""Official OpenAI and Anthropic Python SDKs against a running Berth.

Run by crates/berth/tests/interop.rs, which starts Berth and a mock upstream and passes:
BERTH_URL, BERTH_KEY (an invoker key), and the platform provider "up" (OpenAI wire) and
"anth" (Anthropic wire) pointing at the mock upstream.
"""

import os

import anthropic
import openai
import pytest

URL = os.environ["BERTH_URL"]
KEY = os.environ["BERTH_KEY"]


@pytest.fixture
def oai():
    return openai.OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def ant():
    return anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)


TOOLS_OPENAI = [{"type": "function", "function": {"name": "lookup", "description": "Find a thing",
                 "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
TOOLS_ANTHROPIC = [{"name": "lookup", "description": "Find a thing",
                    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]


@pytest.mark.parametrize("model", ["mock/echo", "up/gpt-4o-mini", "anth/claude-haiku-4-5"])
def test_openai_plain(oai, model):
    r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello berth"}])
    assert "hello berth" in r.choices[0].message.content
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["mock/echo", "up/gpt-4o-mini", "anth/claude-haiku-4-5"])
def test_openai_stream_with_usage(oai, model):
    stream = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "one two three"}],
                                         stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert "one two three" in text
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["mock/tools", "up/tools", "anth/tools"])
def test_openai_tool_calls(oai, model):
    r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "please lookup"}],
                                    tools=TOOLS_OPENAI)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    assert r.choices[0].finish_reason == "tool_calls"
    # The conversation continues with the tool's result.
    follow = oai.chat.completions.create(model="mock/tools", tools=TOOLS_OPENAI, messages=[
        {"role": "user", "content": "please lookup"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ])
    assert "42" in follow.choices[0].message.content


def test_openai_embeddings_and_models(oai):
    e = oai.embeddings.create(model="mock/embed", input=["a", "b"])
    assert len(e.data) == 2 and len(e.data[0].embedding) > 0
    ids = [m.id for m in oai.models.list()]
    assert "mock/echo" in ids


def test_openai_errors_are_sdk_exceptions(oai):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{URL}/v1", api_key="bk_not_a_real_key", max_retries=0).chat.completions.create(
            model="mock/echo", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="up/error-429", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="nobody/nothing", messages=[{"role": "user", "content": "x"}])
    assert "nobody" in str(err.value)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="mock/echo", messages=[{"role": "wizard", "content": "x"}])


@pytest.mark.parametrize("model", ["mock/echo", "up/gpt-4o-mini", "anth/claude-haiku-4-5"])
def test_anthropic_plain(ant, model):
    r = ant.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "hello berth"}])
    assert "hello berth" in r.content[0].text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.stop_reason == "end_turn"


@pytest.mark.parametrize("model", ["mock/echo", "up/gpt-4o-mini", "anth/claude-haiku-4-5"])
def test_anthropic_stream(ant, model):
    with ant.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "one two three"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert "one two three" in text
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["mock/tools", "up/tools", "anth/tools"])
def test_anthropic_tool_use(ant, model):
    r = ant.messages.create(model=model, max_tokens=64, tools=TOOLS_ANTHROPIC,
                            messages=[{"role": "user", "content": "please lookup"}])
    use = [b for b in r.content if b.type == "tool_use"][0]
    assert use.name == "lookup"
    assert r.stop_reason == "tool_use"
    with ant.messages.stream(model=model, max_tokens=64, tools=TOOLS_ANTHROPIC,
                             messages=[{"role": "user", "content": "please lookup"}]) as s:
        final = s.get_final_message()
    assert [b for b in final.content if b.type == "tool_use"][0].name == "lookup"


def test_anthropic_errors_are_sdk_exceptions(ant):
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=URL, api_key="bk_not_a_real_key", max_retries=0).messages.create(
            model="mock/echo", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.RateLimitError):
        ant.messages.create(model="anth/error-429", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.create(model="nobody/nothing", max_tokens=5, messages=[{"role": "user", "content": "x"}])
