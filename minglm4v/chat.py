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
{"type": "text", "text": "..."}]}` or `{"role": ..., "content": "a string"}`; an image or video may also be named
under "path" or "url". An item that carries text and an image/video, or two sources, is refused as ambiguous (the
format would silently use one of them). When a checkpoint folder ships a template of its own that differs from
GLM-4.1V's, `render_with_template` renders that instead (with jinja2, the way transformers does, inside the bounds of
template_sandbox.py), so a fine-tune's prompt format is respected.

Special-token strings typed inside message text (`<|assistant|>`, `<|image|>`, `[gMASK]`) must not become real role or
placeholder tokens: `mark_plain_text` wraps them in two Unicode noncharacters before rendering, and `split_marked`
finds them in the rendered prompt, so the processor tokenizes them as plain characters (transformers does the same
with `apply_chat_template(..., sanitize_control_tokens=True)`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .errors import MessageError
from .template_sandbox import render_template

ROLES = ("system", "user", "assistant")
# sha256 of the published GLM-4.1V-9B-Thinking chat_template.jinja (922 bytes); the Python renderer below
# produces its output (checked by hand against the file, conversation by conversation), except for list content in
# system/assistant messages (see the module docstring).
GLM41V_TEMPLATE_SHA256 = "847603d3ed14387a2b45c197f8d07ddee0f9938051549c727cbc894facfea78b"


# The keys each kind of content item may carry; anything else would be ignored by the chat format, so it is refused.
SOURCE_KEYS = ("path", "url")  # besides "image" / "video": where transformers' messages name a file
ITEM_KEYS = {"text": {"type", "text"}, "image": {"type", "image", *SOURCE_KEYS},
             "video": {"type", "video", "fps", *SOURCE_KEYS}}


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
            _check_item(item, msg["role"], f"message {i}, item {j}")
    return list(messages)


def _check_item(item: Any, role: str, where: str) -> None:
    kind = item_kind(item)
    if kind is None:
        raise MessageError(f"{where}: expected {{'type': 'text', 'text': ...}}, {{'type': 'image', 'image': ...}} "
                           f"or {{'type': 'video', 'video': ...}}; got {item!r:.80}")
    sources = [k for k in ("image", "video", *SOURCE_KEYS) if k in item]
    declared = item.get("type")
    mixed = "text" in item and (bool(sources) or kind != "text")
    if mixed or len(sources) > 1 or (declared in ITEM_KEYS and declared != kind):
        keys = ", ".join(repr(k) for k in item)
        raise MessageError(f"{where} is ambiguous: it carries the keys {keys} (type {declared!r}); one item is "
                           "either text {'type': 'text', 'text': ...} or one image/video under exactly one of "
                           "'image'/'video', 'path', 'url'. Split it into separate items")
    unknown = sorted(set(item) - ITEM_KEYS[kind], key=str)
    if unknown:
        raise MessageError(f"{where}: a {kind} item does not take the key(s) {', '.join(map(repr, unknown))} (they "
                           f"would be ignored); it takes {', '.join(sorted(ITEM_KEYS[kind]))}")
    if kind == "text" and not isinstance(item.get("text"), str):
        raise MessageError(f"{where}: a text item needs a string under 'text'")
    if kind != "text" and role != "user":
        raise MessageError(f"{where}: {kind}s can only be in user messages "
                           f"(the chat format has no place for them in a {role} message)")
    if kind in ("image", "video") and all(item.get(k) is None for k in (kind, *SOURCE_KEYS)):
        raise MessageError(f"{where}: a {kind} item needs the {kind} under '{kind}' (a PIL image / array / "
                           "file path), or a file path or file:// URL under 'path' or 'url'")


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


def media_source(item: dict):
    """The image or video an item names: its 'image'/'video' value, else its 'path', else its 'url'."""
    for key in (item_kind(item), *SOURCE_KEYS):
        if item.get(key) is not None:
            return item[key]
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


def render_with_template(template: str, messages, add_generation_prompt: bool = True,
                         where: str = "chat_template.jinja") -> str:
    """Render a checkpoint's own jinja chat template the way transformers does (sandboxed, trim/lstrip blocks),
    within the bounds of `template_sandbox` (time, output size, number sizes); `where` names the file in errors."""
    check_messages(messages)
    return render_template(template, where, messages=list(messages), add_generation_prompt=add_generation_prompt)


# ---------------------------------------------------------------------- special tokens typed in message text

PLAIN_START, PLAIN_END = "\ufdd0", "\ufdd1"  # Unicode noncharacters: never in real text, kept by jinja


def mark_plain_text(messages: list[dict], tokens: list[str]) -> list[dict]:
    """A copy of `messages` in which every occurrence of one of `tokens` inside a string (text, system prompt,
    assistant turn, metadata) is wrapped in PLAIN_START ... PLAIN_END, so that `split_marked` can tell it from the
    special tokens the chat format writes itself. Media values (images, paths) are left as they are."""
    pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) or "(?!)")

    def mark(value, where):
        if isinstance(value, str):
            if PLAIN_START in value or PLAIN_END in value:
                raise MessageError(f"{where} contains U+FDD0 or U+FDD1, Unicode noncharacters that minglm4v uses "
                                   "internally to keep special-token strings in text plain; remove them")
            return pattern.sub(lambda m: PLAIN_START + m.group(0) + PLAIN_END, value)
        if isinstance(value, dict):
            return {k: value[k] if k in ("image", "video", *SOURCE_KEYS) else mark(value[k], where)
                    for k in value}
        if isinstance(value, (list, tuple)):
            return [mark(v, where) for v in value]
        return value

    return [mark(msg, f"message {i}") for i, msg in enumerate(messages)]


def split_marked(text: str) -> list[tuple[str, bool]]:
    """`text` rendered from marked messages -> [(piece, plain)]: plain pieces are special-token strings that came
    from the messages (to be tokenized as ordinary characters); the rest is the prompt as the format wrote it. A
    lone marker (a template that cut a marked token apart) still separates the text on its two sides."""
    out: list[tuple[str, bool]] = []
    for k, piece in enumerate(re.split(f"{PLAIN_START}(.*?){PLAIN_END}", text, flags=re.S)):
        if k % 2:
            out.append((piece, True))
        else:
            out += [(p, False) for p in re.split(f"[{PLAIN_START}{PLAIN_END}]", piece) if p]
    return [(p, plain) for p, plain in out if p]


def unmark(text: str) -> str:
    """The prompt text without the markers (what `tokenize=False` returns)."""
    return text.replace(PLAIN_START, "").replace(PLAIN_END, "")


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
