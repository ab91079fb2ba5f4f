"""``chordguard mcp`` driven by the MCP SDK's own client against a real cluster: the stuck
chord is found, explained with its next step, and failed (errback run) only when actions were
allowed; over HTTP every request needs the token."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from chordguard.mcp.server import ACTING, READ_ONLY
from chordguard.mcp.tools import _masked
from tests.cluster import PG_BACKEND, REDIS_URL, ROOT, wait_for
from tests.integration.test_actions import lost_header_chord, wait_stuck


def server(cluster, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, cwd=str(ROOT), env=cluster.env(),
                                 args=["-m", "chordguard", "-A", "tests.chordapp", "mcp", *extra])


def document(result) -> dict:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


def error(result) -> str:
    assert result.is_error
    return result.content[0].text


async def read_only_session(params, group_id: str) -> dict:
    seen: dict = {}
    async with Client(params) as client:
        seen["tools"] = {t.name for t in (await client.list_tools()).tools}
        seen["health"] = document(await client.call_tool("health", {}))
        seen["blocked"] = document(await client.call_tool("chords", {"state": "blocked"}))
        seen["chord"] = document(await client.call_tool("chord", {"chord_id": group_id}))
        seen["catalog"] = document(await client.call_tool("diagnoses", {}))
        seen["revoke"] = await client.call_tool("revoke_chord", {"chord_id": group_id})
        seen["bad_id"] = error(await client.call_tool("chord", {"chord_id": "no such; id"}))
        seen["unknown"] = error(await client.call_tool("chord", {"chord_id": "no-such-chord"}))
        seen["too_many"] = error(await client.call_tool("chords", {"limit": 100_000}))
    return seen


async def acting_session(params, group_id: str) -> tuple[dict, dict]:
    async with Client(params) as client:
        plan = document(await client.call_tool("revoke_chord", {"chord_id": group_id}))
        done = document(await client.call_tool("revoke_chord",
                                               {"chord_id": group_id, "confirm": True}))
    return plan, done


def test_an_assistant_finds_explains_and_only_when_allowed_fails_a_stuck_chord(make_cluster):
    cluster = make_cluster(REDIS_URL, PG_BACKEND, {"chordguard_lost_header_grace": 2})
    cluster.start_worker()
    result, errback = lost_header_chord(cluster)
    group_id = result.parent.id
    wait_stuck(cluster, group_id)

    seen = asyncio.run(read_only_session(server(cluster), group_id))
    assert seen["tools"] == set(READ_ONLY)  # no acting tool offered
    assert seen["health"]["health"]["status"] == "unhealthy"
    assert group_id in [c["id"] for c in seen["blocked"]["chords"]]
    assert all("header" not in c for c in seen["blocked"]["chords"])  # paged summaries
    chord = seen["chord"]["chords"][0]
    lost = next(d for d in chord["diagnoses"] if d["code"] == "lost_header")
    assert lost["next_step"] and lost["evidence"]
    assert seen["chord"]["verdict"] == "problem" and chord["header_total"] == 2
    assert "lost_header" in {d["code"] for d in seen["catalog"]["diagnoses"]}
    assert seen["revoke"].is_error  # not a tool of a read-only server
    assert "not a chord, task or dead-letter id" in seen["bad_id"]
    assert "no-such-chord" in seen["unknown"] and "\n" not in seen["unknown"]
    assert "limit must be between 1 and 200" in seen["too_many"]
    assert result.state == "PENDING"  # nothing was done

    plan, done = asyncio.run(acting_session(server(cluster, "--allow-actions"), group_id))
    assert plan["dry_run"] and plan["chords"][0]["chord_id"] == group_id
    assert not done["dry_run"] and done["chords"][0]["chord_id"] == group_id
    wait_for(lambda: result.state == "FAILURE", what="callback FAILURE")
    assert type(result.result).__name__ == "ChordError"
    assert cluster.app.AsyncResult(errback.id).get(timeout=30) == "errback-ran"


async def http_calls(url: str, token: str) -> tuple[int, set[str], dict]:
    async with httpx2.AsyncClient() as plain:
        refused = (await plain.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                    headers={"accept": "application/json, text/event-stream"})
                   ).status_code
    authed = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with authed, Client(streamable_http_client(url, http_client=authed)) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        health = document(await client.call_tool("health", {}))
    return refused, tools, health


def test_over_http_every_request_needs_the_token(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    cluster.start_worker()
    token = "s3cret-token-for-mcp"
    process = subprocess.Popen(
        [sys.executable, "-m", "chordguard", "-A", "tests.chordapp", "mcp", "--http", "0",
         "--allow-actions"], env={**cluster.env(), "CHORDGUARD_TOKEN": token}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "chordguard mcp: http://127.0.0.1:" in line and "token required" in line, line
        url = line.split()[2]
        refused, tools, health = asyncio.run(http_calls(url, token))
        assert refused == 401
        assert tools == set(READ_ONLY + ACTING)
        assert health["health"]["status"] in ("healthy", "unknown")
        assert token not in json.dumps(health)
    finally:
        process.terminate()
        process.wait(10)


def test_actions_over_http_without_a_token_are_refused_before_binding(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    env = {k: v for k, v in cluster.env().items() if k != "CHORDGUARD_TOKEN"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "chordguard", "-A", "tests.chordapp", "mcp",
                           "--http", "0", "--allow-actions"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "needs --token" in done.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("secret", ["redis://:hunter2@db:6379/0", "amqp://u:hunter2@mq//"])
def test_replies_never_carry_a_password(secret):
    masked = _masked({"sources": [{"detail": f"cannot reach {secret}"}], "n": 3})
    assert "hunter2" not in json.dumps(masked) and masked["n"] == 3
