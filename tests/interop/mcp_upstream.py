"""A small MCP server built with the official Python SDK, used as an upstream for Berth's MCP
gateway tests.

    python mcp_upstream.py PORT

Serves the server "pyshop" over Streamable HTTP (stateless, so every request stands alone and
no session id is needed) at http://127.0.0.1:PORT/mcp. Prints a line "READY" on stdout once
the port is accepting connections and exits cleanly (status 0) on SIGTERM or SIGINT.

Tools:
  lookup(sku)  -> "sku {sku}: 3 in stock"
  add(a, b)    -> a + b
  whoami()     -> the Authorization header of the HTTP request that carried the call ("" if
                  none), so a test can see which credential Berth forwarded upstream.

Not collected by pytest (its name does not start with test_).
"""

import asyncio
import signal
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer(name="pyshop", version="1.0.0", log_level="WARNING")


@server.tool()
def lookup(sku: str) -> str:
    """Look up the stock level of a product by its SKU."""
    return f"sku {sku}: 3 in stock"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def whoami(ctx: Context) -> str:
    """Return the Authorization header this request arrived with."""
    headers = ctx.headers or {}
    # Starlette's Headers are case-insensitive; a plain mapping may not be.
    for name, value in headers.items():
        if name.lower() == "authorization":
            return value
    return ""


async def serve(port: int) -> None:
    app = server.streamable_http_app(stateless_http=True, json_response=True, host="127.0.0.1")
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=3)
    http = uvicorn.Server(config)

    # uvicorn swaps in its own SIGTERM/SIGINT handlers while serving (graceful shutdown) and
    # afterwards re-raises the signal to the handler that was there before. Make that one
    # only ask for shutdown, so the process exits 0 rather than dying of the signal (and a
    # signal arriving before uvicorn has started still stops it).
    def stop(_sig, _frame):
        http.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Bind here so a busy port is a plain error message, not a traceback from inside uvicorn.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    task = asyncio.create_task(http.serve(sockets=[sock]))
    # uvicorn sets `started` once it is accepting on the socket and the app's lifespan (which
    # starts the SDK's session manager) has run.
    while not http.started:
        if task.done():
            await task  # startup failed: surface the error
            if http.should_exit:
                return  # stopped by a signal while starting
            raise SystemExit(f"server exited before it started listening on port {port}")
        await asyncio.sleep(0.02)
    print("READY", flush=True)
    await task


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python mcp_upstream.py PORT")
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
