#!/usr/bin/env python3
"""Reference counts for the ShareGPT asset, written to
Tests/SFTCoreTests/Fixtures/data/sharegpt_first200.txt.

Reads the (cut-off) JSON array element by element with Python's json.JSONDecoder.raw_decode,
applies sft's conversation rules independently (role names mapped, optional first system
message, a leading assistant turn dropped, then user/assistant alternating, no empty turn, at least one assistant turn) and writes:
the example count and every skipped record (index, line, reason kind) of the first 200 records,
the role counts over their examples, and the record/example counts over the whole file.

Usage: python3 tools/sharegpt_first200.py [.assets/ShareGPT_V3_unfiltered_cleaned_split.json]
"""
import json
import sys

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "bot": "assistant",
         "model": "assistant", "system": "system"}


BLANK = set(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                       0x202F, 0x205F, 0x3000, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF]))


def blank(s):
    """Only Unicode White_Space and zero-width characters: sft's "empty turn"."""
    return all(c in BLANK for c in s)


def check(record):
    """Returns (messages, None) or (None, reason kind)."""
    if not isinstance(record, dict):
        return None, "not a JSON object"
    conv = record.get("conversations")
    if conv is None:
        return None, "missing field"
    if not isinstance(conv, list):
        return None, "wrong type"
    msgs = []
    if isinstance(record.get("system"), str) and record["system"]:
        msgs.append(("system", record["system"]))
    for m in conv:
        if not isinstance(m, dict):
            return None, "wrong type"
        role = m.get("from", m.get("role"))
        if role is None:
            return None, "missing field"
        if not isinstance(role, str):
            return None, "wrong type"
        if role.lower() not in ROLES:
            return None, "unknown role"
        value = m.get("value", m.get("content"))
        if value is None:
            return None, "missing field"
        if not isinstance(value, str):
            return None, "wrong type"
        msgs.append((ROLES[role.lower()], value))
    if not msgs:
        return None, "empty conversation"
    first_turn = 1 if msgs[0][0] == "system" else 0
    if first_turn < len(msgs) and msgs[first_turn][0] == "assistant":
        del msgs[first_turn]  # FastChat's rule: a leading assistant turn answers nothing
    expected, seen_assistant = "user", False
    for i, (role, value) in enumerate(msgs):
        if blank(value):
            return None, "empty turn"
        if i == 0 and role == "system":
            continue
        if role != expected:
            return None, "roles do not alternate"
        seen_assistant |= role == "assistant"
        expected = "assistant" if expected == "user" else "user"
    if not seen_assistant:
        return None, "no assistant turn"
    return msgs, None


def elements(text):
    """Yields (index, line, value) for each complete element of a top-level array."""
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    index = 0
    line, counted = 1, 0  # newlines counted up to `counted`
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        try:
            value, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return  # the cut-off last record
        line += text.count("\n", counted, i)
        counted = i
        yield index, line, value
        index += 1
        i = end


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else ".assets/ShareGPT_V3_unfiltered_cleaned_split.json"
    text = open(path, encoding="utf-8").read()
    out, roles, kept, skipped = [], {}, 0, []
    total_records = total_examples = 0
    for index, line, value in elements(text):
        msgs, reason = check(value)
        total_records += 1
        total_examples += msgs is not None
        if index < 200:
            if msgs is None:
                skipped.append(f"skip {index} {line} {reason}")
            else:
                kept += 1
                for r, _ in msgs:
                    roles[r] = roles.get(r, 0) + 1
    out.append(f"examples {kept}")
    out += skipped
    out.append("roles " + " ".join(f"{k}={roles[k]}" for k in sorted(roles)))
    out.append(f"all_records {total_records}")
    out.append(f"all_examples {total_examples}")
    dest = "Tests/SFTCoreTests/Fixtures/data/sharegpt_first200.txt"
    with open(dest, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out[:3] + out[-3:]))


if __name__ == "__main__":
    main()
