"""The openai engine against a small fake vLLM server (stdlib ``http.server`` on 127.0.0.1) answering
with a recorded vLLM-style reply that carries ``reasoning_content``."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from r1probe.errors import R1ProbeError
from r1probe.eval.engines import OpenAIEngine, parse_endpoint
from r1probe.models.chat import split_reasoning

#: a chat completion as vLLM's OpenAI server returns it with ``--reasoning-parser deepseek_r1``
VLLM_REPLY = {
    "id": "chatcmpl-5d1c0a7e2b8f4e0c9a3b6d2f1e4c7a90", "object": "chat.completion", "created": 1740000000,
    "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": "用户在问天气，我应该礼貌回答。",
                                         "content": "今天天气晴朗。", "tool_calls": []},
                 "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
    "usage": {"prompt_tokens": 12, "total_tokens": 30, "completion_tokens": 18, "prompt_tokens_details": None},
    "prompt_logprobs": None,
}
MODELS = {"object": "list", "data": [{"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "object": "model",
                                      "created": 1740000000, "owned_by": "vllm", "root": "x", "parent": None,
                                      "max_model_len": 4096, "permission": []}]}


class _Fake(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self.server.seen.append(("GET", self.path, None, self.headers.get("Authorization")))
        self._send(200, MODELS)

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(("POST", self.path, req, self.headers.get("Authorization")))
        if self.server.fail:
            code = self.server.fail.pop(0)
            self._send(code, {"object": "error", "message": f"fake {code}", "type": "BadRequestError",
                              "param": None, "code": code})
            return
        self._send(200, VLLM_REPLY)


@pytest.fixture()
def fake():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    srv.seen, srv.fail = [], []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv):
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_reasoning_content_is_kept_as_the_reasoning(fake):
    eng = OpenAIEngine(_url(fake) + "/v1", max_new_tokens=64, thinks=True, retries=0)
    reply = eng.generate([("今天天气怎么样？", None)])[0]
    sp = split_reasoning(reply, prompt_opened_think=eng.thinks)
    assert sp.reasoning == "用户在问天气，我应该礼貌回答。" and sp.answer == "今天天气晴朗。" and sp.terminated
    # no model named: the server's first listed model is used
    post = [s for s in fake.seen if s[0] == "POST"][0]
    assert post[1] == "/v1/chat/completions" and post[2]["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert post[2]["max_tokens"] == 64 and post[2]["messages"] == [{"role": "user", "content": "今天天气怎么样？"}]


def test_sampling_settings_system_prompt_and_key_are_sent(fake):
    eng = OpenAIEngine(_url(fake) + "#m", temperature=0.6, top_p=0.95, seed=3, system="你是助手", api_key="tok",
                       retries=0)
    eng.generate([("问题", None)])
    eng.for_sample(2).generate([("问题", None)])
    a, b = [s for s in fake.seen if s[0] == "POST"]
    assert a[2]["temperature"] == 0.6 and a[2]["top_p"] == 0.95 and a[2]["seed"] == 3 and b[2]["seed"] == 5
    assert a[2]["messages"][0] == {"role": "system", "content": "你是助手"} and a[3] == "Bearer tok"
    assert eng.describe()["top_p"] == 0.95 and eng.describe()["model"] == "m"


def test_server_errors_are_retried_by_the_client(fake):
    fake.fail = [503]
    eng = OpenAIEngine(_url(fake) + "#m", retries=2)
    assert eng.generate([("q", None)])[0].endswith("今天天气晴朗。")
    assert len([s for s in fake.seen if s[0] == "POST"]) == 2


def test_a_bad_request_is_one_line(fake):
    fake.fail = [400]
    with pytest.raises(R1ProbeError, match=r"HTTP 400: fake 400") as e:
        OpenAIEngine(_url(fake) + "#m", retries=3).generate([("q", None)])
    assert "\n" not in str(e.value)
    assert len([s for s in fake.seen if s[0] == "POST"]) == 1  # a 400 is not retried


def test_parse_endpoint():
    assert parse_endpoint("http://h:8000/v1/chat/completions#m") == ("http://h:8000", "m")
    assert parse_endpoint("http://h:8000/v1/") == ("http://h:8000", None)
