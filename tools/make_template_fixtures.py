#!/usr/bin/env python3
"""Golden outputs for sft's chat-template interpreter, rendered with Python jinja2.

Writes into Tests/SFTCoreTests/Fixtures/templates/:
  smollm2.jinja    SmolLM2-135M-Instruct's own template, read from its GGUF
                   (tokenizer.chat_template; the model is Apache-2.0)
  expected.json    every template in ../shared/chat-templates/ (read in place, never copied)
                   plus smollm2.jinja, rendered over several conversations, generation prompt
                   off and on: the text, or the message of the error the template raised
  semantics.json   small templates exercising jinja2 semantics (whitespace control, scoping,
                   filters, tests, Python operators and methods) with their outputs or errors
  tool_formats.json  the tool-format templates written for sft (llama3.1-json-tools.jinja,
                   mistral-v0.3-tools.jinja; read, never written) over tool conversations
and into Tests/SFTCoreTests/Fixtures/data/:
  tools.jsonl      the tool-calling conversation as a messages record with `tools`
  tools_llama3.1.jsonl, tools_mistral.jsonl   the conversations each tool format trains on

The environment is the one transformers' `_compile_jinja_template` builds for
`apply_chat_template` (checked against transformers' source): ImmutableSandboxedEnvironment
with trim_blocks and lstrip_blocks, the loop-controls extension, a `generation` tag,
transformers' `tojson` (json.dumps with ensure_ascii=False, indent, separators, sort_keys),
`raise_exception`, `strftime_now`, and its `dict` / `namespace` globals. If transformers is
installed, every output is also checked against transformers' own environment.

Usage: python3 tools/make_template_fixtures.py [--templates DIR] [--gguf FILE]
Needs: pip install jinja2 gguf   (gguf only to extract SmolLM2's template)
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "SFTCoreTests", "Fixtures", "templates")
BOS, EOS = "<s>", "</s>"
# strftime_now renders this fixed instant, so outputs do not depend on when they were made.
FIXED_NOW = datetime.datetime(2024, 7, 26, 14, 5, 9)


class GenerationTag(Extension):
    """transformers' AssistantTracker tag: `{% generation %}...{% endgeneration %}` renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                if isinstance(name, str) and name.startswith("_"):
                    raise jinja2.exceptions.SecurityError(name)
            jinja2.utils.Namespace.__init__(self, attrs)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = dict
    env.globals["namespace"] = TemplateNamespace
    return env


ENV = make_env()


def render(source, **variables):
    """(text, None) or (None, error message)."""
    try:
        return ENV.from_string(source).render(**variables), None
    except jinja2.exceptions.TemplateError as e:
        return None, str(e)
    except Exception as e:  # Python-level errors inside the template (TypeError, ...)
        return None, f"{type(e).__name__}: {e}"


def transformers_render(source, **variables):
    """The same through transformers' own environment, or NotImplemented when unavailable."""
    try:
        from transformers.utils import chat_template_utils as ctu
    except Exception:
        return NotImplemented
    try:
        compiled = ctu._compile_jinja_template(source)
        compiled.environment.globals["strftime_now"] = lambda f: FIXED_NOW.strftime(f)
        return compiled.render(**variables), None
    except jinja2.exceptions.TemplateError as e:
        return None, str(e)
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


def msg(role, content, **extra):
    m = {"role": role, "content": content}
    m.update(extra)
    return m


WEATHER_TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city — in °C or °F.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}}},
]

CONVERSATIONS = {
    "single_user": {"messages": [msg("user", "What is the capital of France?")]},
    "system_user": {"messages": [msg("system", "You are a concise assistant."), msg("user", "Name three primes.")]},
    "multi_turn": {"messages": [
        msg("user", "Hi!"), msg("assistant", "Hello! How can I help you today?"),
        msg("user", "Tell me a joke."), msg("assistant", "Why did the scarecrow win an award? He was outstanding in his field.")]},
    "system_multi_turn": {"messages": [
        msg("system", "You are a pirate. Answer like one."),
        msg("user", "Where is the treasure?"), msg("assistant", "Arr, buried on the island, matey!"),
        msg("user", "How deep?"), msg("assistant", "Ten paces down, by the old palm.")]},
    "unicode": {"messages": [
        msg("user", "Ünïcödé ✓ — 日本語 😀 \"quotes\", 'apostrophes' and \\backslash\\ <tags> & {{ braces }} {% not jinja %}"),
        msg("assistant", "Réponse : ok 👍\nSecond line\twith a tab.")]},
    "whitespace": {"messages": [
        msg("system", "  padded system prompt \n"),
        msg("user", "\n  leading and trailing whitespace  \n\n"),
        msg("assistant", " spaced\n\nanswer\r\nwith CRLF ")]},
    "not_alternating": {"messages": [msg("user", "first"), msg("user", "second")]},
    "tools": {"tools": WEATHER_TOOLS, "messages": [
        msg("system", "You can call tools."),
        msg("user", "What's the weather in Paris, in celsius?"),
        msg("assistant", "", tool_calls=[{"type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]),
        msg("tool", "{\"temperature\": 21, \"condition\": \"sunny\"}"),
        msg("tool", "{\"note\": \"second result\"}"),
        msg("assistant", "It is 21 °C and sunny in Paris.")]},
}


# Tool formats beyond the shared templates': templates written for sft from the published
# Llama-3.1 JSON and Mistral v0.3 tool formats (Fixtures/templates/README.md), rendered over
# tool conversations into tool_formats.json. Messages are written with their keys in the order
# sft passes them to templates (role, content, tool_calls, then the rest sorted), so a record of
# Fixtures/data/ read by sft renders to the same text.
TOOL_FORMAT_TEMPLATES = ["llama3.1-json-tools.jinja", "mistral-v0.3-tools.jinja"]


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


TOOL_FORMAT_CONVERSATIONS = {
    "one_call": {"tools": WEATHER_TOOLS, "messages": [
        msg("user", "What's the weather in Paris, in celsius?"),
        msg("assistant", "", tool_calls=[call("call00001", "get_weather", {"city": "Paris", "unit": "celsius"})]),
        msg("tool", "{\"temperature\": 21, \"condition\": \"sunny\"}", tool_call_id="call00001"),
        msg("assistant", "It is 21 °C and sunny in Paris.")]},
    "system_one_call": {"tools": WEATHER_TOOLS, "messages": [
        msg("system", "You are a weather bot. Use the tools."),
        msg("user", "  Is it raining in Oslo?  "),
        msg("assistant", "", tool_calls=[call("call00002", "get_weather", {"city": "Oslo"})]),
        msg("tool", "{\"temperature\": 4, \"condition\": \"rain\"}", tool_call_id="call00002"),
        msg("assistant", "Yes: 4 °C and raining in Oslo.")]},
    "two_calls": {"tools": WEATHER_TOOLS, "messages": [
        msg("user", "Weather in Paris, and what is 2 + 3.5?"),
        msg("assistant", "", tool_calls=[call("call00003", "get_weather", {"city": "Paris"}),
                                         call("call00004", "add", {"a": 2, "b": 3.5})]),
        msg("tool", "{\"temperature\": 21, \"condition\": \"sunny\"}", tool_call_id="call00003"),
        msg("tool", "5.5", tool_call_id="call00004"),
        msg("assistant", "Sunny, 21 °C in Paris; 2 + 3.5 = 5.5.")]},
    "tools_then_chat": {"tools": WEATHER_TOOLS, "messages": [
        msg("user", "Add 1 and 2."),
        msg("assistant", "", tool_calls=[call("call00005", "add", {"a": 1, "b": 2})]),
        msg("tool", "3", tool_call_id="call00005"),
        msg("assistant", "1 + 2 = 3."),
        msg("user", "Thanks!"),
        msg("assistant", "You're welcome.")]},
    "call_without_id": {"tools": WEATHER_TOOLS, "messages": [
        msg("user", "Add 1 and 2."),
        msg("assistant", "", tool_calls=[{"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]),
        msg("tool", "3"),
        msg("assistant", "3.")]},
    "no_tools": {"messages": [msg("user", "Hi!"), msg("assistant", "Hello.")]},
}
# Dataset records for the data-path tests: the conversation each format trains on.
TOOL_FORMAT_RECORDS = {
    "tools_llama3.1.jsonl": ["system_one_call", "one_call"],
    "tools_mistral.jsonl": ["two_calls", "one_call"],
}


def template_sources(templates_dir, gguf_path):
    sources = {}
    for name in sorted(os.listdir(templates_dir)):
        if name.endswith(".jinja"):
            with open(os.path.join(templates_dir, name), encoding="utf-8") as f:
                sources[name] = f.read()
    smol_path = os.path.join(OUT, "smollm2.jinja")
    if gguf_path and os.path.exists(gguf_path):
        import gguf
        reader = gguf.GGUFReader(gguf_path)
        smol = reader.fields["tokenizer.chat_template"].contents()
        with open(smol_path, "w", encoding="utf-8") as f:
            f.write(smol)
    with open(smol_path, encoding="utf-8") as f:
        sources["smollm2.jinja"] = f.read()
    return sources


# Small templates for semantics.json. The context: `messages` below, bos/eos, tools=None.
SEMANTIC_MESSAGES = [msg("user", "hi"), msg("assistant", "yo")]
SEMANTIC_CASES = [
    # whitespace control, comments, raw
    "  {% if true %}\n    x\n  {% endif %}\n  y\n",
    "a  {%- if true -%}  b  {%- endif -%}  c",
    "line1\n    {# comment #}\nline2\n  {#- c -#}  line3",
    "{% raw %}{{ not parsed }}{% endraw %}\n {%+ if true %}keep{% endif %}",
    "{{ 'a' }}\n  {{ 'b' }}\n{% for i in range(3) +%}\n{{ i }}\n{% endfor %}",
    "{% for x in [1,2] %}\n  {{ x }}\n{% endfor %}",
    "{%- set x = 1 -%}\n   {{ x }}   \n   text",
    "{% if true %}  {# a #}\n{% endif %}done",
    "  {% if true %}a{% endif %}  {% if true %}b{% endif %}",
    "{{ 'x' }}   {% if true %}y{% endif %}",
    "text  \n\t{% if true %}tab{% endif %}",
    "{#- only comment -#}\n  after",
    "a {{- ' b ' -}} c",
    "{{ '\\n' }}{% if true -%}\n   x\n{%- endif %}",
    "x\r\ny\r{% if true %}\r\nz{% endif %}\n",
    "trailing newline kept once\n\n",
    "{%- for message in messages -%}\n    {{- message.role | upper }}: {{ message.content }}\n{% endfor -%}\nend",
    "{% generation %}gen {{ 1 }}{% endgeneration %}",
    "{% generation %}{% set x = 1 %}{% endgeneration %}[{{ x }}]{% set x = 0 %}{% for i in [1] %}{% generation %}{{ x }}{{ i }}{{ loop.index }}{% endgeneration %}{% endfor %}",
    "{% block b %}{% set y = 2 %}{{ y }}{% endblock %}[{{ y }}]",
    # literals and operators
    "{{ \"tab\\there\" }}|{{ 'q\\'s' }}|{{ \"\\u00e9\\x41\\101\" }}|{{ 'a' 'b' }}",
    "{{ 1_000 + 0x10 + 0o10 + 0b10 }} {{ 1.5e2 }} {{ 10 / 4 }} {{ 10 // 4 }} {{ -10 // 4 }} {{ 10 % -3 }} {{ 2 ** 10 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'abc' }} {{ 'x' not in ['y'] }} {{ 1 in {1: 2} }}",
    "{{ none }} {{ None }} {{ true }} {{ True }} {{ false and 1 }} {{ 0 or 'x' }} {{ [] or none }} {{ not none }}",
    "{{ 'abc' if false }}|{{ 'abc' if true else 'd' }}|{{ x if x is defined else 'nodef' }}|{{ 1 if 0 else 2 if 0 else 3 }}",
    "{{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ not 1 == 2 }} {{ 1 + 2 * 3 - 4 / 2 }} {{ 'a' ~ (1 + 2) }} {{ (1, 2) | length }}",
    "{{ 'a' ~ 1 + 2 }}",
    "{{ 1e16 }} {{ 1e15 }} {{ 1.0e-4 }} {{ 1.5e-5 }} {{ 0.1 * 3 }} {{ 1/3 }} {{ 2**0.5 }} {{ 100.0 }} {{ -0.0 }} {{ 123456789012345678 }}",
    "{{ 0.1 + 0.2 == 0.3 }}{{ 1.0 }}{{ 1.5 | int }}{{ -1.5 | int }}{{ 7 % 2.5 }}{{ -7 // 2.0 }}{{ 2 ** -2 }}{{ 10 / 5 }}",
    "{{ 'a' ~ 1 ~ [1] ~ none }}{{ 'x' + 'y' * 2 }}{{ [1] + [2] }}{{ (1,) + (2,) }}{{ 'x' * 0 }}{{ [1] * 3 }}{{ 3 * 'ab' }}{{ -1 * 'a' }}",
    "{{ 'a' < 'b' }}{{ [1, 2] == [1, 2] }}{{ (1, 2) == [1, 2] }}{{ {'a': 1} == {'a': 1} }}{{ 1 == true }}{{ 0 == false }}{{ none == false }}{{ 'a' != 'a' }}",
    "{{ [1, 'two', none, [3]] | string }}{{ ('a', 1) }}{{ {'k': [1, {'z': none}]} }}{{ {'q': \"it's\"} }}{{ [\"a\\\"b\", 'c\\\\d', 'e\\nf'] }}",
    "{{ \"{% raw %}\" }}{{ '}}' }}{{ {'a': {'b': 1}} }}",
    # variables and scoping
    "{% set x = 1 %}{% for i in [1,2] %}{% set x = i %}{{x}}{% endfor %}{{x}}",
    "{% for i in [1,2,3] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}",
    "{% set x = 5 %}{% for i in [1,2,3] %}[{{ x }}]{% set x = i %}{% endfor %}",
    "{% set x = 1 %}{% macro g() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ g() }}{% for i in [1] %}{% set x = 3 %}{{ g() }}{% endfor %}",
    "{% if true %}{% set z = 3 %}{% endif %}{{z}}",
    "{% set ns = namespace(found=false, items=[]) %}{% for m in messages %}{% if m.role == 'assistant' %}{% set ns.found = true %}{% set ns.items = ns.items + [m.content] %}{% endif %}{% endfor %}{{ ns.found }}{{ ns.items }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}{% for (x, y) in [(1, 2)] %}{{ x + y }}{% endfor %}",
    "{% set block %}inner {{ 1 + 1 }}{% endset %}[{{ block }}]{% set b2 | upper %}shout{% endset %}{{ b2 }}",
    "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a }}",
    "{% set d = {'x': 1} %}{{ d.x }}{{ d['x'] }}{{ d.y }}",
    "{{ x.y }}",
    "{{ none.y }}|{{ [1,2][5] }}|{{ {'a':1}['b'] }}|{{ (1).real }}",
    # control flow
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for a in [1,2] %}{% for b in ['x','y'] %}{{ loop.index }}{{ a }}{{ b }}{{ loop.depth }} {% endfor %}{% endfor %}",
    "{% for item in [{'n':'a','c':[{'n':'b','c':[]}]}] recursive %}{{ item.n }}({{ loop.depth }}){% if item.c %}[{{ loop(item.c) }}]{% endif %}{% endfor %}",
    "{% for x in [1,2,3] %}{{ loop.cycle('odd','even') }}{{ loop.changed(x // 2) }} {% endfor %}",
    "{% for i in range(3) %}{{ loop.index }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{{ loop.previtem }}|{{loop.nextitem}};{% endfor %}",
    "{% for i in [1,2,3] if i > 1 %}{{ loop.index }}:{{ i }}{% else %}none{% endfor %}{% for i in [] %}x{% else %}empty{% endfor %}",
    "{% for m in messages if m.role == 'user' %}{{ loop.index }}/{{ loop.length }}:{{ m.content }}{% endfor %}",
    "{% for m in messages[::-1] %}{{ m.role }}{% endfor %}{{ messages[1:][0].content }}",
    "{% if messages[0]['role'] == 'system' %}sys{% elif messages[0].role == 'user' %}user{% else %}other{% endif %}",
    # macros, call, filter blocks
    "{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', 'Hi') }} {{ greet(name='C', punct='?') }}",
    "{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, a=3) }}",
    "{% macro f(a, b=a ~ '!') %}{{ b }}{% endmacro %}{{ f('q') }}",
    "{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}",
    "{% macro list_it(items) %}{% for i in items %}<{{ caller(i) }}>{% endfor %}{% endmacro %}{% call(x) list_it([1,2]) %}item{{ x }}{% endcall %}",
    "{% filter upper %}hello {{ 'world' }}{% endfilter %}",
    # filters
    "{{ messages | map(attribute='role') | join(', ') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='content') | first }}",
    "{{ [3,1,2] | sort }} {{ ['b','A','c'] | sort }} {{ ['b','A','c'] | sort(case_sensitive=true) }} {{ [3,1,2] | sort(reverse=true) }} {{ messages | sort(attribute='role') | map(attribute='role') | list }}",
    "{{ [1,2,3] | sum }} {{ [1,2,3] | max }} {{ ['a','B'] | min }} {{ [1,1,2] | unique | list }} {{ {'b':1,'a':2} | dictsort }} {{ [1,2,3] | reverse | list }} {{ 'abc' | reverse }}",
    "{{ [1,2,3,4,5] | batch(2) | list }} {{ [1,2,3,4,5] | slice(2) | list }} {{ 'hello world foo' | wordcount }} {{ 'a b c d e f' | truncate(5) }} {{ 'hello world'|truncate(9, true) }}",
    "{{ [1, 2, 3] | select('odd') | list }}{{ [1, 2, 3] | reject('odd') | list }}{{ [1,2,3] | map('string') | join }}{{ ['a','b'] | map('upper') | list }}{{ [{'a': 1}, {}] | map(attribute='a', default=0) | list }}",
    "{{ [{'n': {'m': 5}}] | map(attribute='n.m') | list }}{{ [[1, 2]] | map(attribute='1') | list }}{{ [[1,2]] | map(attribute=1) | list }}",
    "{% if [1]|select %}T{% endif %}{% if []|select %}T{% endif %}{{ [1,2]|map('string')|list }}",
    "{{ ['a', 'b'] | join('-') }} {{ [1, 2] | join }} {{ messages | join(',', attribute='role') }}",
    "{{ 3|float }} {{ '3.5'|float }} {{ 'x'|float }} {{ 3.9|int }} {{ '0x1A'|int(0, 16) }} {{ '12'|int }} {{ true|int }} {{ none|int }} {{ -3|abs }} {{ 3.14159|round(3) }} {{ 3.5|round(0,'floor') }} {{ 2.675|round(2) }} {{ 2.5|round }} {{ 2|round }}",
    "{{ 'abc'|length }}{{ [1,2]|count }}{{ {'a':1}|length }}{{ undefined_var|length }}{{ 'x'|list }}{{ (1,2)|list }}{{ 'ab'|first }}{{ 'ab'|last }}{{ []|first }}",
    "{{ {'b': 2, 'a': [1, 'x', none, true, 1.5]} | tojson }}{{ {'k': 'é'} | tojson(indent=2) }}{{ [1,[2,{}],[]] | tojson(indent=1) }}{{ {'b':1,'a':2} | tojson(sort_keys=true) }}{{ 'é<>&' | tojson(ensure_ascii=true) }}{{ {'a':1} | tojson(separators=(',',':')) }}",
    "{{ messages | tojson }}{{ {'t': 1e20, 'u': 0.5, 'v': -3, 'w': '\\u0001\\t/'} | tojson }}",
    "{{ 'a\\nb\\nc' | indent }}|{{ 'a\\nb' | indent(2, first=true) }}|{{ 'a\\n\\nb' | indent('>>', blank=true) }}",
    "{{ 'ab' | center(7) }}|{{ 'hello world' | title }}|{{ 'hello-world (a)' | title }}|{{ 'Hello World' | lower | capitalize }}",
    "{{ '  x  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'abc'|upper }}{{ 'ABC'|lower }}{{ 'aBC def'|capitalize }}",
    "{{ '%s and %d' | format('x', 3) }} {{ '%5.2f|%-4s|%04d' % (3.14159, 'ab', 7) }} {{ '%(a)s-%(b)d' % {'a': 'x', 'b': 3} }} {{ '%r' % 'x' }} {{ '%x %o %X %e' % (255, 8, 255, 12345.678) }} {{ '%.3g|%g' % (0.0001234, 1e20) }} {{ '%c%%' % 65 }}",
    "{{ '%5s|%-5s|%05.1f|%+d|% d' % ('ab', 'cd', 3.14159, 5, 5) }}",
    "{{ 'A  b\\tc' | wordcount }}{{ '<b>bold</b>  text' | striptags }}{{ '<a href=\"x\">' | e }}{{ 'x' | safe }}",
    "{{ 'Hello' | truncate(3, false, '', 0) }}|{{ 'one two three four' | truncate(10, leeway=0) }}",
    "{{ x|default('dflt') }}{{ ''|default('e', true) }}{{ none|default('n') }}{{ 'é' | upper }}{{ 'ß' | upper }}{{ 'ǆ' | capitalize }}{{ 'ÀB' | lower }}",
    "{{ 'abc'.replace('b', 'X') }}{{ 'aaa'.replace('a', 'b', 2) }}{{ 'ab'.replace('', '-') }}{{ 'abc' | replace('c', 'Z') }}",
    # tests
    "{{ x is defined }}{{ none is none }}{{ 1 is number }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 1 is iterable }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 'a' is in 'abc' }}{{ 1 is eq 1 }}{{ 2 is gt 1 }}{{ 'ab' is lower }}{{ 'AB' is upper }}{{ true is boolean }}{{ 1 is integer }}{{ 1.0 is float }}{{ none is sameas none }}{{ 'upper' is filter }}{{ 'odd' is test }}",
    "{{ 10 is divisibleby(5) }}{{ [1, 2] is sequence }}{{ {} is sequence }}{{ loop is undefined }}{{ messages[0].role is string }}{{ tools is none }}{{ tools is defined }}",
    # methods
    "{{ 'a-b-c'.split('-', 1) }}|{{ 'a-b-c'.rsplit('-', 1) }}|{{ ' a  b '.split() }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '  a '.lstrip() }}|{{ ' a  '.rstrip() }}",
    "{{ 'Hello'.startswith('He') }}{{ 'Hello'.endswith(('x','lo')) }}{{ 'hello'.find('l') }}{{ 'hello'.rfind('l') }}{{ 'hello'.count('l') }}{{ 'a,b'.partition(',') }}{{ 'abc'.upper() }}{{ 'ABC'.lower() }}{{ 'hello world'.title() }}{{ 'hELLO'.capitalize() }}{{ 'ab'.center(6, '*') }}{{ '42'.zfill(5) }}{{ '42'.isdigit() }}{{ 'ab'.isalpha() }}",
    "{% set x = 'abc' %}{{ x.startswith('a', 1) }}{{ x.find('c', 1, 2) }}{{ x.endswith('b', 0, 2) }}",
    "{{ {'a':1}.get('a') }}{{ {'a':1}.get('b') }}{{ {'a':1}.get('b', 5) }}{{ {'a':1,'b':2}.items() | list }}{{ {'a':1}.keys() | list }}{{ {'a':1}.values() | list }}{% for k, v in {'x': 1, 'y': 2}.items() %}{{k}}{{v}}{% endfor %}{{ {'a':1}|items|list }}",
    "{{ [1,2,3][1:] }}{{ [1,2,3][:-1] }}{{ [1,2,3][::-1] }}{{ 'hello'[1:3] }}{{ 'hello'[-3:] }}{{ 'hello'[::2] }}{{ messages[-1].content }}{{ messages[5] }}",
    "{{ 'hello world'.split(' ')[-1] }}{{ 'a.b.c'.split('.')[1:] | join('/') }}{{ 'x</think>y'.split('</think>')[-1].lstrip('\\n') }}",
    "{{ '{} {}'.format(1, 'b') }} {{ '{0}{1}{0}'.format('a','b') }} {{ '{name}!'.format(name='n') }} {{ '{:>5}|{:<4}|{:^6}|{:.3f}'.format('ab', 'c', 'mid', 2.5) }}",
    "{{ '{:5d}|{:05d}|{:+d}|{:x}|{:,}'.format(42, 42, 42, 255, 1234567) }}{{ '{}'.format(none) }}{{ '{!r}'.format('a') }}{{ '{0[x]}'.format({'x': 1}) }}",
    "{{ messages[0] }}{{ messages | length }}{{ messages[0].keys() | list }}{{ messages[0].content.upper() }}{{ messages[0]['content'][0] }}{{ messages[0].get('content') }}",
    "{{ dict(a=1, b=2) }}{{ dict([('x', 1)]) }}{{ range(2, 10, 3) | list }}{{ range(5)|length }}",
    "{{ strftime_now('%Y-%m-%d %H:%M:%S %d %b %Y %A') }}",
    # errors (the message need not match; an error must happen)
    "{{ 5 // 0 }}",
    "{{ undefined_thing.attr }}",
    "{{ undefined_thing + 1 }}",
    "{{ 'a' + 1 }}",
    "{{ [1] < ['a'] }}",
    "{{ messages.append(1) }}",
    "{% for %}",
    "{% if x %}",
    "{{ x|nosuchfilter }}",
    "{% if false %}{{ x|nosuchfilter }}{% endif %}ok",
    "{{ x is nosuchtest }}",
    "{{ 1 +",
    "{% endfor %}",
    "{{ range(200000) | length }}",
    "{{ raise_exception('custom message') }}",
    "{% set ns = namespace(_x=1) %}",
    "{{ 'abc'[1] + 2 }}",
    "{{ {'a': 1} | tojson }}{{ x | tojson }}",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--templates", default=os.path.join(ROOT, "..", "shared", "chat-templates"))
    ap.add_argument("--gguf", default=os.path.join(os.environ.get("SFT_ASSETS", os.path.join(ROOT, ".assets")),
                                                   "SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = ap.parse_args()
    if not os.path.isdir(args.templates):
        for cand in [os.path.join(ROOT, "..", "..", "shared", "chat-templates"), "/work/shared/chat-templates"]:
            if os.path.isdir(cand):
                args.templates = cand
                break
    os.makedirs(OUT, exist_ok=True)
    sources = template_sources(args.templates, args.gguf)
    checked = 0

    def both(source, **variables):
        nonlocal checked
        got = render(source, **variables)
        ref = transformers_render(source, **variables)
        if ref is not NotImplemented:
            checked += 1
            if ref[0] != got[0] or (ref[1] is None) != (got[1] is None):
                sys.exit(f"jinja2 and transformers disagree:\n{source[:200]}\n{got}\n{ref}")
        return got

    cases = []
    for tname, source in sources.items():
        takes_tools = "tools" in source
        for cname, conv in CONVERSATIONS.items():
            if "tools" in conv and not takes_tools:
                continue
            for agp in (False, True):
                text, error = both(source, messages=conv["messages"], tools=conv.get("tools"), documents=None,
                                   add_generation_prompt=agp, bos_token=BOS, eos_token=EOS)
                case = {"template": tname, "conversation": cname, "add_generation_prompt": agp}
                if error is None:
                    case["text"] = text
                else:
                    case["error"] = error
                cases.append(case)
    expected = {
        "generated_by": "tools/make_template_fixtures.py",
        "jinja2_version": jinja2.__version__,
        "bos_token": BOS,
        "eos_token": EOS,
        "template_sha256": {n: hashlib.sha256(s.encode("utf-8")).hexdigest() for n, s in sources.items()},
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")

    semantics = []
    for src in SEMANTIC_CASES:
        text, error = both(src, messages=SEMANTIC_MESSAGES, tools=None, documents=None, add_generation_prompt=False,
                           bos_token=BOS, eos_token=EOS)
        semantics.append({"template": src, "text": text} if error is None else {"template": src, "error": error})
    with open(os.path.join(OUT, "semantics.json"), "w", encoding="utf-8") as f:
        json.dump({"generated_by": "tools/make_template_fixtures.py", "jinja2_version": jinja2.__version__,
                   "now": FIXED_NOW.isoformat(), "messages": SEMANTIC_MESSAGES, "bos_token": BOS, "eos_token": EOS,
                   "cases": semantics}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    tool_cases = []
    tool_sources = {}
    for tname in TOOL_FORMAT_TEMPLATES:
        with open(os.path.join(OUT, tname), encoding="utf-8") as f:
            tool_sources[tname] = f.read()
        for cname, conv in TOOL_FORMAT_CONVERSATIONS.items():
            for agp in (False, True):
                text, error = both(tool_sources[tname], messages=conv["messages"], tools=conv.get("tools"),
                                   add_generation_prompt=agp, bos_token=BOS, eos_token=EOS)
                case = {"template": tname, "conversation": cname, "add_generation_prompt": agp}
                case.update({"text": text} if error is None else {"error": error})
                tool_cases.append(case)
    with open(os.path.join(OUT, "tool_formats.json"), "w", encoding="utf-8") as f:
        json.dump({"generated_by": "tools/make_template_fixtures.py", "jinja2_version": jinja2.__version__,
                   "now": FIXED_NOW.isoformat(), "bos_token": BOS, "eos_token": EOS,
                   "template_sha256": {n: hashlib.sha256(s.encode("utf-8")).hexdigest() for n, s in tool_sources.items()},
                   "conversations": TOOL_FORMAT_CONVERSATIONS, "cases": tool_cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    # The tool-calling conversation as a dataset record (OpenAI / HF messages format), for the
    # data tests: loaded through sft's data path, its training render must equal the golden
    # rendering above, key order included.
    data_dir = os.path.join(os.path.dirname(OUT), "data")
    with open(os.path.join(data_dir, "tools.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"tools": CONVERSATIONS["tools"]["tools"], "messages": CONVERSATIONS["tools"]["messages"]},
                           ensure_ascii=False) + "\n")
    for fname, names in TOOL_FORMAT_RECORDS.items():
        with open(os.path.join(data_dir, fname), "w", encoding="utf-8") as f:
            for cname in names:
                conv = TOOL_FORMAT_CONVERSATIONS[cname]
                f.write(json.dumps({"tools": conv["tools"], "messages": conv["messages"]}, ensure_ascii=False) + "\n")
    print(f"{len(cases)} template renderings over {len(sources)} templates, {len(tool_cases)} tool-format renderings,"
          f" {len(semantics)} semantic cases"
          f" (jinja2 {jinja2.__version__}; {checked} also checked against transformers)")


if __name__ == "__main__":
    main()
