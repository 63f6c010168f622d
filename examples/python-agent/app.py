"""An example Berth agent in Python, built into a WebAssembly component by componentize-py.

It does what examples/rust-agent does: answers with the model, calls the tools the model
asks for, counts its runs in its key-value store and, when its configuration names a status
page, fetches it over HTTP (which the manifest's allowed_hosts must allow).

Build (see README.md): componentize-py -d ../../crates/sdk/wit -w agent componentize app -o agent.wasm
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, http, kv, llm, log, thread, tools

MAX_TURNS = 4


def text(role, value):
    return llm.Message(role=role, content=[llm.Part_Text(value)])


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        raw = kv.get("runs")
        runs = (int(raw.decode()) if raw else 0) + 1
        kv.set("runs", str(runs).encode())
        log.write(log.Level.INFO, f"run number {runs}")

        messages = thread.history()
        messages.append(text(llm.Role.USER, input))
        request = llm.ChatRequest(
            model=None,
            system=config.get("system"),
            messages=messages,
            tools=tools.list(),
            max_tokens=None,
            temperature=None,
        )
        called = []
        answer = llm.chat(request)
        for _ in range(1, MAX_TURNS):
            if not answer.tool_calls:
                break
            parts = [llm.Part_Text(answer.text)] if answer.text else []
            parts += [llm.Part_ToolCall(c) for c in answer.tool_calls]
            request.messages.append(llm.Message(role=llm.Role.ASSISTANT, content=parts))
            for call in answer.tool_calls:
                try:
                    result, is_error = tools.call(call.name, call.arguments), False
                    called.append(call.name)
                except Err as e:
                    result, is_error = f"{e.value.code}: {e.value.message}", True
                    called.append(f"{call.name}({e.value.code})")
                request.messages.append(
                    llm.Message(
                        role=llm.Role.TOOL,
                        content=[llm.Part_ToolResult(llm.ToolResult(call.id, result, is_error))],
                    )
                )
            answer = llm.chat(request)

        url = config.get("status_url")
        if url is None:
            status = "none"
        else:
            try:
                r = http.send(http.Request(method="GET", url=url, headers=[], body=b""))
                status = f"{r.status} {r.body.decode(errors='replace').strip()}"
            except Err as e:
                kind = type(e.value).__name__.removeprefix("HttpError_").lower()
                status = f"unavailable ({kind})"
        return f"{answer.text}\n[runs: {runs}; tools: {','.join(called)}; status: {status}]"
