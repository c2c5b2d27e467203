"""The GLM-4.1V chat format: messages -> prompt text, and the model's answer -> (thinking, answer).

Mirrors the checkpoint's `chat_template.jinja` (docs/glm41v.md §7.1) as plain Python:

    [gMASK]<sop>
    <|system|>\\n{text}                                     per system message
    <|user|>\\n{items}                                      items in order: <|begin_of_image|><|image|><|end_of_image|>
                                                          for an image, <|begin_of_video|><|video|><|end_of_video|>
                                                          for a video, the text itself for text (no separators)
    <|assistant|>{metadata}\\n{text}                        per assistant message (metadata usually empty)
    <|assistant|>\\n                                        if add_generation_prompt

One deliberate difference: for a system or assistant message whose content is a *list* of text items, the published
template prints the Python repr of the list (clearly unintended); we join the texts. For string content, and for
user messages of any form, the output is the template's, character for character.

Messages use transformers' format: `{"role": "user", "content": [{"type": "image", "image": ...},
{"type": "text", "text": "..."}]}` or `{"role": ..., "content": "a string"}`. When a checkpoint folder ships a
template of its own that differs from GLM-4.1V's, `render_with_template` renders that instead (with jinja2, the way
transformers does), so a fine-tune's prompt format is respected.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .errors import MessageError, MinGlmError

ROLES = ("system", "user", "assistant")
# sha256 of the published GLM-4.1V-9B-Thinking chat_template.jinja (922 bytes); the Python renderer below
# produces its output (checked by hand against the file, conversation by conversation), except for list content in
# system/assistant messages (see the module docstring).
GLM41V_TEMPLATE_SHA256 = "847603d3ed14387a2b45c197f8d07ddee0f9938051549c727cbc894facfea78b"


def check_messages(messages: Any) -> list[dict]:
    """Validate a conversation and return it as a list; errors say which message is wrong and how."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise MessageError("a conversation is a non-empty list of {'role': ..., 'content': ...} dicts, got "
                           f"{type(messages).__name__ if messages else 'an empty list'}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise MessageError(f"message {i} must be a dict with 'role' and 'content', got {msg!r:.80}")
        if msg["role"] not in ROLES:
            raise MessageError(f"message {i} has role {msg['role']!r}; GLM-4.1V knows {', '.join(ROLES)}")
        content = msg["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, (list, tuple)):
            raise MessageError(f"message {i}: content must be a string or a list of items, "
                               f"got {type(content).__name__}")
        for j, item in enumerate(content):
            kind = item_kind(item)
            if kind is None:
                raise MessageError(f"message {i}, item {j}: expected {{'type': 'text', 'text': ...}}, "
                                   f"{{'type': 'image', 'image': ...}} or {{'type': 'video', 'video': ...}}; "
                                   f"got {item!r:.80}")
            if kind == "text" and not isinstance(item.get("text"), str):
                raise MessageError(f"message {i}, item {j}: a text item needs a string under 'text'")
            if kind != "text" and msg["role"] != "user":
                raise MessageError(f"message {i}, item {j}: {kind}s can only be in user messages "
                                   f"(the chat format has no place for them in a {msg['role']} message)")
            if kind in ("image", "video") and item.get(kind) is None and item.get("path") is None:
                raise MessageError(f"message {i}, item {j}: a {kind} item needs the {kind} under '{kind}' "
                                   "(a PIL image / array / file path) or a file path under 'path'")
    return list(messages)


def item_kind(item: Any) -> str | None:
    """'text', 'image', 'video' or None, read the way the template reads it (a 'video'/'image' key counts)."""
    if not isinstance(item, dict):
        return None
    if item.get("type") == "video" or "video" in item:
        return "video"
    if item.get("type") == "image" or "image" in item:
        return "image"
    if item.get("type") == "text":
        return "text"
    return None


def _text_of(content, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = [it["text"] for it in content if item_kind(it) == "text"]
    if len(parts) != len(content):
        raise MessageError(f"{where} content may only hold text items")
    return "".join(parts)


def render_chat(messages, add_generation_prompt: bool = True) -> str:
    """Prompt text for a conversation, exactly as GLM-4.1V's chat template writes it."""
    out = ["[gMASK]<sop>"]
    for msg in check_messages(messages):
        role, content = msg["role"], msg["content"]
        if role == "system":
            out.append("<|system|>\n" + _text_of(content, "a system message's"))
        elif role == "user":
            out.append("<|user|>\n")
            if isinstance(content, str):
                out.append(content)
            else:
                for item in content:
                    kind = item_kind(item)
                    out.append({"video": "<|begin_of_video|><|video|><|end_of_video|>",
                                "image": "<|begin_of_image|><|image|><|end_of_image|>"}.get(kind)
                               or item["text"])
        else:
            out.append(f"<|assistant|>{msg.get('metadata') or ''}\n" + _text_of(content, "an assistant message's"))
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)


def template_is_glm41v(template: str) -> bool:
    return hashlib.sha256(template.encode()).hexdigest() == GLM41V_TEMPLATE_SHA256


def render_with_template(template: str, messages, add_generation_prompt: bool = True) -> str:
    """Render a checkpoint's own jinja chat template the way transformers does (sandboxed, trim/lstrip blocks)."""
    check_messages(messages)
    try:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:  # jinja2 comes with jupyterlab; say what to do if it is missing
        raise MinGlmError("this checkpoint ships its own chat template, which needs jinja2: pip install jinja2") from e

    def raise_exception(message):
        raise MessageError(f"the checkpoint's chat template refused the conversation: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt)
    except TemplateError as e:
        raise MessageError(f"the checkpoint's chat template failed: {e}") from e


_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) from a `<think>...</think><answer>...</answer>` reply (docs/glm41v.md §7.3).

    Missing tags are tolerated the way a reader would expect: no `<think>` block gives empty thinking; no `<answer>`
    tag gives everything after `</think>` (or the whole text) as the answer; an unfinished `<answer>` (generation
    stopped early) gives what there is. Whitespace around both parts is stripped."""
    think = _THINK.search(text)
    thinking = think.group(1) if think else ""
    rest = text[think.end():] if think else text
    if not think and "<think>" in text:  # thinking never finished
        return text.split("<think>", 1)[1].strip(), ""
    answer = _ANSWER.search(rest)
    return thinking.strip(), (answer.group(1) if answer else rest).strip()
