"""Files out: a file of the assistant's workspace reaches the chat (`/file PATH`, or the button
beside a file on a turn's final card), as a Feishu file or an inline image, or a clear refusal:
outside the workspace (a symlink pointing out is out), missing, a directory, over Feishu's limit.
The images a turn wrote show on its final card.

Real Codex against the scripted model, the real runtime worker reading the workspace, the Feishu
chats' worker with the real lark-oapi SDK against the fake Feishu.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import lark_oapi as lark
import pytest
from temporalio.client import Client

from ally import names
from ally.contracts import CHUNK_BYTES, FileQuery
from ally.model_server import ApplyPatch, CallTool, Hang, RunCommand, Say
from ally.workspace_files import inspect
from dev.fake_feishu import Message, card_action_event
from tests.feishu_stack import FeishuStack, card_markdown
from tests.test_progress import history_events, progress_cards, progress_stack, turn_result, versions

CHAT = "oc_files"


async def _file_reply(fstack: FeishuStack, message_id: str) -> Message:
    [reply] = await fstack.wait_for_replies(message_id, within=60)
    return reply


@pytest.mark.codex
@pytest.mark.feishu
async def test_slash_file_sends_a_workspace_file_and_refuses_outside_missing_directory_and_too_big(
    client: Client, tmp_path: Path
) -> None:
    async with progress_stack(client, tmp_path, "cli_files_slash") as fstack:
        workspace = fstack.stack.workspace
        data = os.urandom(2 * 1024 * 1024 + 12345)  # three chunks
        (workspace / "out").mkdir()
        (workspace / "out" / "report.bin").write_bytes(data)
        secret = tmp_path / "secret.txt"
        secret.write_text("not yours")
        (workspace / "link.txt").symlink_to(secret)
        os.truncate(_touch(workspace / "huge.log"), 31 * 1024 * 1024)  # 31 MB on paper, nothing on disk

        sent = (await fstack.say(CHAT, "/file out/report.bin"))["event"]["message"]["message_id"]
        reply = await _file_reply(fstack, sent)
        assert reply.msg_type == "file"
        uploaded = fstack.fake.files[reply.content["file_key"]]
        assert uploaded.data == data and uploaded.file_name == "report.bin"

        refusals = {
            "/file ../secret.txt": "outside the assistant's workspace",
            f"/file {secret}": "outside the assistant's workspace",
            "/file link.txt": "outside the assistant's workspace",
            "/file nothere.txt": "There is no file nothere.txt in the workspace.",
            "/file out": "out is a directory",
            "/file huge.log": "huge.log is 31.0 MB, over the chat's limit of 30.0 MB for a file.",
            "/file": "Say which file",
        }
        for command, words in refusals.items():
            asked = (await fstack.say(CHAT, command))["event"]["message"]["message_id"]
            refusal = await _file_reply(fstack, asked)
            assert refusal.msg_type == "interactive", command
            assert words in card_markdown(refusal), (command, card_markdown(refusal))
        assert len(fstack.fake.files) == 1, "nothing else was uploaded"
        assert b"not yours" not in json.dumps([m.raw_content for m in fstack.fake.messages]).encode()

        # The bytes never entered the conversation's history: only the child's few events did.
        conversation = names.conversation_id(CHAT)
        size = sum(
            [
                event.ByteSize()
                async for event in client.get_workflow_handle(conversation).fetch_history_events()
            ]
        )
        assert size < 200 * 1024, size
        transfer = f"file:{conversation}:{sent}"
        events = await history_events(client, transfer)
        chunks = -(-len(data) // CHUNK_BYTES)
        assert chunks == 5 and events <= 7 * chunks + 20, events
        print(
            f"a {len(data)} byte file: {events} events in its transfer's history; conversation {size} bytes"
        )


@pytest.mark.codex
@pytest.mark.feishu
async def test_the_final_card_lists_the_changed_files_each_button_sends_one_and_a_written_image_shows_inline(
    client: Client, tmp_path: Path
) -> None:
    async with progress_stack(client, tmp_path, "cli_files_card") as fstack:
        stack = fstack.stack
        stack.model.push(
            RunCommand(cmd="echo drawing", escalated=False),
            Hang(
                seconds=3.5,
                then=ApplyPatch(
                    patch="*** Begin Patch\n*** Add File: notes.txt\n+noted\n"
                    "*** Add File: chart.png\n+not really a png, but the fake takes it\n*** End Patch\n"
                ),
            ),
            Hang(seconds=2.5, then=Say(text="Wrote notes.txt and chart.png.")),
        )
        message_id = (await fstack.say(CHAT, "draw"))["event"]["message"]["message_id"]
        result = await turn_result(client, CHAT, message_id)
        assert result.status == "completed"
        await asyncio.sleep(1.0)

        [card] = progress_cards(fstack, message_id)
        settled = versions(fstack, card)[-1]
        assert settled["header"]["title"]["content"] == "Done"
        images = _find(settled, lambda node: node.get("tag") == "img")
        assert len(images) == 1
        image = fstack.fake.images[images[0]["img_key"]]
        assert image.data == (stack.workspace / "chart.png").read_bytes()
        buttons = {v["path"]: v for v in _find(settled, lambda node: node.get("ally") == "file")}
        assert set(buttons) == {"notes.txt", "chart.png"}

        click = card_action_event(
            "ou_user", buttons["notes.txt"], card.message_id, CHAT, app_id=fstack.fake.app_id
        )
        answer = json.loads(lark.JSON.marshal(await fstack.deliver(click)))
        assert answer["toast"]["type"] == "success", answer

        def file_message() -> Message | None:
            return next(
                (m for m in fstack.fake.messages if m.parent_id == card.message_id and m.msg_type == "file"),
                None,
            )

        sent = await fstack.fake.async_wait_for(file_message, timeout=60)
        assert fstack.fake.files[sent.content["file_key"]].data == b"noted\n"


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _find(node: Any, match: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if match(node):
            found.append(node)
        for value in node.values():
            found += _find(value, match)
    elif isinstance(node, list):
        for value in node:
            found += _find(value, match)
    return found


def test_a_path_is_inside_the_workspace_only_once_its_links_are_resolved(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "docs").mkdir(parents=True)
    (workspace / "docs" / "a.md").write_text("a")
    (workspace / "img.PNG").write_bytes(b"x" * 100)
    (workspace / "inner").symlink_to(workspace / "docs")
    (tmp_path / "out.txt").write_text("out")
    (workspace / "out").symlink_to(tmp_path / "out.txt")

    def ask(path: str, **limits: int) -> Any:
        return inspect(FileQuery(workspace=str(workspace), path=path, **limits))

    assert ask("docs/a.md").refused is None and ask("docs/a.md").relative == "docs/a.md"
    assert ask(str(workspace / "docs" / "a.md")).refused is None
    assert ask("inner/a.md").relative == "docs/a.md", "a link inside the workspace is fine"
    assert "outside" in (ask("out").refused or "")
    assert "outside" in (ask("docs/../../out.txt").refused or "")
    assert "directory" in (ask("docs").refused or "")
    assert ask("img.PNG").kind == "image"
    assert ask("img.PNG", max_image_bytes=50).kind == "file", "an image too big to show goes as a file"
    assert "over the chat's limit" in (ask("img.PNG", max_file_bytes=50).refused or "")


def _tiny_png() -> bytes:
    """A real 1x1 PNG: Codex's view_image decodes what it is shown."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


async def test_an_image_codex_viewed_in_the_workspace_shows_inline_on_the_final_card(
    client: Client, tmp_path: Path
) -> None:
    async with progress_stack(client, tmp_path, "cli_files_viewed") as fstack:
        stack = fstack.stack
        picture = stack.workspace / "screenshot.png"
        picture.write_bytes(_tiny_png())
        stack.model.push(
            RunCommand(cmd="echo looking", escalated=False),
            Hang(seconds=3.5, then=CallTool(name="view_image", arguments={"path": str(picture)})),
            Hang(seconds=1.0, then=Say(text="The screenshot shows one green pixel.")),
        )
        message_id = (await fstack.say(CHAT, "what is on the screenshot?"))["event"]["message"]["message_id"]
        result = await turn_result(client, CHAT, message_id)
        assert result.status == "completed"
        await asyncio.sleep(1.0)

        [card] = progress_cards(fstack, message_id)
        settled = versions(fstack, card)[-1]
        images = _find(settled, lambda node: node.get("tag") == "img")
        assert len(images) == 1
        assert fstack.fake.images[images[0]["img_key"]].data == picture.read_bytes()
