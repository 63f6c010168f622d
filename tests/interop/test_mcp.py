"""The official Python MCP client against Berth's MCP endpoint (${BERTH_URL}/mcp).

Environment:
  BERTH_URL         Berth's base URL.
  BERTH_MCP_KEY     a tenant API key, sent as "Authorization: Bearer KEY". Without it this
                    module is skipped (the SDK interop run does not set it).
  BERTH_MCP_EXPECT  JSON object: {"tools": [names that tools/list must include]}, optionally
                    "whoami": the exact text pyshop__whoami must return (the credential Berth
                    forwards to the pyshop upstream, tests/interop/mcp_upstream.py).

Each client test runs twice: mode "legacy" (the initialize handshake, protocol 2025-11-25) and
mode "auto" (the SDK's default: a server/discover probe for 2026-07-28 first, falling back to
initialize when the server answers it with a JSON-RPC error or an HTTP 4xx).
"""

import asyncio
import json
import os

import pytest

if not os.environ.get("BERTH_MCP_KEY"):
    pytest.skip("BERTH_MCP_KEY not set: MCP interop not requested", allow_module_level=True)

import httpx2  # noqa: E402  (the HTTP client the MCP SDK is built on)
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

URL = os.environ["BERTH_URL"].rstrip("/") + "/mcp"
KEY = os.environ["BERTH_MCP_KEY"]
EXPECT = json.loads(os.environ.get("BERTH_MCP_EXPECT") or "{}")
MODES = ["legacy", "auto"]


async def _with_client(mode, fn, key=KEY):
    """Connect (and handshake) with the given auth key, run `await fn(client)`, disconnect."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http:
        async with Client(streamable_http_client(URL, http_client=http), mode=mode) as client:
            return await fn(client)


def run(mode, fn):
    return asyncio.run(_with_client(mode, fn))


def text_of(result):
    assert not result.is_error, result
    return "".join(block.text for block in result.content if getattr(block, "type", None) == "text")


@pytest.mark.parametrize("mode", MODES)
def test_handshake_and_tools_listed(mode):
    async def go(client):
        assert client.protocol_version
        names, cursor = [], None
        while True:
            page = await client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                return names

    names = run(mode, go)
    missing = [n for n in EXPECT.get("tools", []) if n not in names]
    assert not missing, f"missing tools {missing}; listed {names}"


@pytest.mark.parametrize("mode", MODES)
def test_call_add(mode):
    async def go(client):
        return text_of(await client.call_tool("pyshop__add", {"a": 2, "b": 3}))

    assert "5" in run(mode, go)


@pytest.mark.parametrize("mode", MODES)
def test_call_lookup(mode):
    async def go(client):
        return text_of(await client.call_tool("pyshop__lookup", {"sku": "A1"}))

    assert "A1" in run(mode, go)


@pytest.mark.parametrize("mode", MODES)
def test_whoami_sees_forwarded_credential(mode):
    if "whoami" not in EXPECT:
        pytest.skip('BERTH_MCP_EXPECT has no "whoami"')

    async def go(client):
        return text_of(await client.call_tool("pyshop__whoami", {}))

    got = run(mode, go)
    assert got == EXPECT["whoami"]
    assert KEY not in got, "the caller's Berth key leaked to the upstream"


def test_bad_key_is_rejected():
    # Plain HTTP, so the assertion is on the status Berth answers, not on SDK error mapping.
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "berth-interop", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    for auth in (None, "Bearer not-a-real-key"):
        h = dict(headers, **({"Authorization": auth} if auth else {}))
        r = httpx2.post(URL, json=body, headers=h, timeout=30.0)
        assert r.status_code in (401, 403), (auth, r.status_code, r.text)
