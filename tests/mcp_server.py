"""A tiny MCP server (stdio, stdlib only) the tests give an assistant: one tool, `lookup_ticket`.

Codex starts it as a child (`python tests/mcp_server.py`) and speaks MCP to it: newline-delimited
JSON-RPC over stdin/stdout. Each `tools/call` is appended as one JSON line to the file named by
`ALLY_TEST_MCP_CALLS`, so a test can tell that the tool really ran, and with which arguments.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

CALLS_ENV = "ALLY_TEST_MCP_CALLS"
TOOL = "lookup_ticket"
PROTOCOL_VERSION = "2025-06-18"  # used when the client names none; otherwise the client's is echoed
METHOD_NOT_FOUND = -32601

TOOLS = [
    {
        "name": TOOL,
        "description": "Look up a support ticket by its id and return its status.",
        "inputSchema": {
            "type": "object",
            "properties": {"id": {"type": "string", "description": "The ticket id, e.g. T-42"}},
            "required": ["id"],
            "additionalProperties": False,
        },
    }
]


def ticket_text(ticket_id: str) -> str:
    return f"Ticket {ticket_id}: open, the printer on floor 3 is jammed."


def handle(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion") or PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "ally-test-tickets", "version": "1.0.0"},
        }
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        arguments = params.get("arguments") or {}
        if calls := os.environ.get(CALLS_ENV):
            with open(calls, "a", encoding="utf-8") as file:
                file.write(json.dumps({"tool": params.get("name"), "arguments": arguments}) + "\n")
        if params.get("name") != TOOL:
            return {"content": [{"type": "text", "text": f"no tool {params.get('name')}"}], "isError": True}
        text = ticket_text(str(arguments.get("id")))
        return {"content": [{"type": "text", "text": text}], "isError": False}
    if method == "ping":
        return {}
    raise LookupError(method)


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue  # a notification (initialized, cancelled) or a response: nothing to answer
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            reply["result"] = handle(message["method"], message.get("params") or {})
        except LookupError:
            reply["error"] = {"code": METHOD_NOT_FOUND, "message": f"no method {message['method']}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
