"""edgellm serve with the shipped task models: over HTTP, a task model's prompt gets exactly the
text the library gives it (the task template applied on the one path from prompt to ids)."""

import httpx
import openai
import pytest

import edgellm
from serving import running

PROMPTS = {
    "en-fr": ["English: Where is the station?\nFrench:", "English: I like cats.\nFrench:",
              "English: Tom is reading a book.\nFrench:"],
    "babi-qa1": ["John went to the kitchen.\nMary moved to the garden.\nWhere is Mary?",
                 "Sandra journeyed to the office.\nDaniel went back to the hallway.\nWhere is Sandra?"],
}


@pytest.fixture(scope="module", params=sorted(PROMPTS))
def served(request):
    model = edgellm.load(request.param)
    with running(model, max_concurrency=2, queue_size=4) as url:
        yield request.param, model, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0), url


def test_completions_give_the_library_greedy_text(served):
    name, model, client, _ = served
    for prompt in PROMPTS[name]:
        expected = model.generate(prompt, temperature=0, max_new_tokens=24)
        reply = client.completions.create(model=name, prompt=prompt, temperature=0, max_tokens=24)
        assert reply.choices[0].text == expected.text, prompt
        assert reply.usage.prompt_tokens == len(model.encode_prompt(prompt))
        assert reply.usage.completion_tokens == len(expected.token_ids)


def test_streamed_completions_give_the_library_greedy_text(served):
    name, model, client, _ = served
    for prompt in PROMPTS[name]:
        expected = model.generate(prompt, temperature=0, max_new_tokens=24).text
        chunks = client.completions.create(model=name, prompt=prompt, temperature=0, max_tokens=24, stream=True)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == expected, prompt


def test_chat_with_a_task_model_answers_one_user_message_in_its_template(served):
    name, model, client, url = served
    prompt = PROMPTS[name][0]
    expected = model.generate(prompt, temperature=0, max_new_tokens=24).text
    reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                           temperature=0, max_tokens=24)
    assert reply.choices[0].message.content == expected.lstrip()
    for messages in ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
                     [{"role": "user", "content": prompt}, {"role": "assistant", "content": "x"},
                      {"role": "user", "content": prompt}]):
        response = httpx.post(url + "/v1/chat/completions", json={"messages": messages, "temperature": 0})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "messages" and "/v1/completions" in error["message"]
