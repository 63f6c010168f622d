"""Forwards HTTP requests to an MCP endpoint, adding `Authorization: Bearer $BERTH_MCP_KEY`.

    BERTH_MCP_KEY=bk_... python3 scripts/mcp-auth-proxy.py PORT TARGET_URL

For clients that cannot send headers (the MCP conformance suite): they talk to
http://127.0.0.1:PORT/ and every request reaches TARGET_URL with the tenant key. Answers,
event streams included, are passed back as they come. Standard library only.
"""

import http.client
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
TARGET = urllib.parse.urlsplit(sys.argv[2])
KEY = os.environ["BERTH_MCP_KEY"]
HOP = {"host", "connection", "keep-alive", "transfer-encoding", "authorization", "content-length"}


class Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Authorization"] = f"Bearer {KEY}"
        conn = http.client.HTTPConnection(TARGET.hostname, TARGET.port, timeout=120)
        conn.request(self.command, TARGET.path, body=body, headers=headers)
        resp = conn.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            chunk = resp.read1(65536)
            if not chunk:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        conn.close()

    do_GET = do_POST = do_DELETE = forward

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Forward).serve_forever()
