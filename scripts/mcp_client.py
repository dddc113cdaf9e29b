"""Drives surge's MCP server with the official Python MCP client (PyPI `mcp`), for
api/tests/mcp_e2e.rs. Nobody here wrote this client: it checks that surge speaks the
protocol as others read it.

    python mcp_client.py PLAN_JSON

PLAN_JSON: {"transport": "stdio", "command": ..., "args": [...], "env": {...}}
        or {"transport": "http", "url": ".../mcp", "token": ...},
  plus "calls": [{"tool": name, "arguments": {...}}, ...].
Prints one JSON document on stdout: the server's name and protocol version, every tool
(name, description, input schema, annotations) and each call's result (isError and the
structured content, or the text). The Rust test judges the answers.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


def wire(model):
    """A result as it travels (camelCase, as the protocol spells it)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def drive(session, calls):
    init = wire(await session.initialize())
    tools = wire(await session.list_tools())
    results = []
    for call in calls:
        r = wire(await session.call_tool(call["tool"], call.get("arguments") or {}))
        texts = [c.get("text") for c in r.get("content", []) if c.get("type") == "text"]
        results.append({
            "tool": call["tool"],
            "is_error": bool(r.get("isError")),
            "structured": r.get("structuredContent"),
            "text": texts,
        })
    return {
        "server": init["serverInfo"]["name"],
        "protocol_version": init["protocolVersion"],
        "tools": [
            {
                "name": t["name"],
                "description": t.get("description"),
                "input_schema": t.get("inputSchema"),
                "annotations": t.get("annotations"),
            }
            for t in tools["tools"]
        ],
        "results": results,
    }


async def main(plan):
    calls = plan.get("calls", [])
    if plan["transport"] == "stdio":
        params = StdioServerParameters(command=plan["command"], args=plan["args"], env=plan.get("env"))
        async with stdio_client(params) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                return await drive(session, calls)
    headers = {"Authorization": "Bearer " + plan["token"]}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(plan["url"], http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                return await drive(session, calls)


if __name__ == "__main__":
    out = asyncio.run(asyncio.wait_for(main(json.loads(sys.argv[1])), timeout=120))
    json.dump(out, sys.stdout, default=str)
