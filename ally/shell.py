"""What a shell command line is made of, read with a real bash grammar (tree-sitter-bash).

Pure: parsing is computation on the text, nothing is run, read or looked up. The result is what the
approval policy judges (ally/policy.py): every simple command with its words as bash would pass
them (quotes, escapes and `$'…'` removed), what feeds its input, where it writes, and which parts
are known only at run time. What this module cannot model exactly is never guessed: a construct it
does not follow (loops, functions, declarations…) is named in `Script.unsupported`, and a text the
grammar rejects, or one where the grammar is known to differ from bash, is not a Script at all.
Both send the request to a person (docs/operations.md, "Autonomy modes").
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Literal

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

# The grammar's parser reads out of bounds (and can crash the process) on a `{` followed by a
# character of four UTF-8 bytes (most emoji; upstream tree-sitter-bash issue 337). Such text is
# not parsed: it goes to a person. A superset of the trigger, as measured in tests/test_policy.py.
_CRASHES_THE_GRAMMAR = re.compile("{.*[\U00010000-\U0010ffff]", re.DOTALL)
MAX_LENGTH = 64_000  # characters; a longer command is not judged: ask
MAX_NESTING = 8  # bash -c "sh -c '…'" and eval eval … deeper than this are not judged: ask
_MAX_DEPTH = 200  # syntax-tree depth; far beyond any real command, short of Python's recursion limit
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "fish", "csh", "tcsh"})
RUNTIME = "$…"  # stands in a word for a part known only at run time

RedirectKind = Literal["write", "read", "dup", "heredoc", "herestring"]


@dataclass(frozen=True)
class Word:
    text: str  # as bash passes it, with RUNTIME for each expansion or substitution
    source: str  # as written, for messages
    static: bool = True  # no expansion, substitution or brace expansion: `text` is exact before globbing
    glob: bool = False  # an unquoted * ? or [: bash replaces the word with matching file names
    tilde: bool = False  # an unquoted leading ~: bash puts a home directory there
    piped: bool = False  # `<(…)`: a file name whose content is another command's output

    @property
    def fragments(self) -> tuple[str, ...]:
        """The literal pieces between the parts known only at run time."""
        return tuple(piece for piece in self.text.split(RUNTIME) if piece)


@dataclass(frozen=True)
class Redirect:
    op: str
    kind: RedirectKind
    target: Word | None  # the file (write, read), the text (here-document, here-string); None for dup


@dataclass(frozen=True)
class Command:
    """One simple command: `NAME=value… word… redirect…`."""

    words: tuple[Word, ...]
    assignments: tuple[tuple[str, Word], ...] = ()
    redirects: tuple[Redirect, ...] = ()
    fed: bool = False  # its standard input comes from a pipe, a file, a here-document or a here-string
    substituted: bool = False  # runs inside $(…), `…`, <(…) or >(…)
    stands_for_script: bool = False  # nothing but `sh -c SCRIPT`: what runs is SCRIPT's commands

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(word.text for word in self.words)


@dataclass(frozen=True)
class Script:
    commands: tuple[Command, ...]  # every simple command, substituted and nested ones included
    unsupported: tuple[str, ...] = ()  # constructs not followed: "a for loop", "export", …
    background: bool = False  # something runs with `&`
    wrapper: Command | None = None  # Codex's own `bash -lc SCRIPT`, which `commands` stand for


class _Unreadable(Exception):
    pass


@cache
def _language() -> Language:
    return Language(tree_sitter_bash.language())


def parse_script(text: str) -> Script | None:
    """The commands of `text`; None when it cannot be read as bash exactly (a person decides).

    When the whole text is `bash -lc SCRIPT` (how Codex runs every command), `wrapper` holds that
    call and `commands` are SCRIPT's: the wrapper is how Codex runs things, not something it asks
    to do.
    """
    return _parse(text, 0, top=True)


def _parse(text: str, depth: int, *, top: bool = False) -> Script | None:
    if len(text) > MAX_LENGTH or depth > MAX_NESTING or _CRASHES_THE_GRAMMAR.search(text):
        return None
    try:
        source = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: not text bash could be given
        return None
    tree = Parser(_language()).parse(source)  # held while its nodes are read
    root = tree.root_node
    if root.has_error or _continues_inside_a_word(root, source) or _text_between_parts(root, source):
        return None
    walker = _Walker(source)
    try:
        walker.statement(root, _Context(), 0)
    except (_Unreadable, UnicodeDecodeError):
        return None
    del tree
    if top and len(walker.commands) == 1 and not walker.background and not walker.unsupported:
        (only,) = walker.commands
        found = _wrapped_script(only.texts)
        plain = not (only.redirects or only.assignments or only.fed) and all(w.static for w in only.words)
        if plain and found is not None and found[1:] == (0, len(only.words)) and only.texts[0] != "eval":
            inner = _parse(found[0], depth + 1)
            return replace(inner, wrapper=replace(only, stands_for_script=True)) if inner else None
    commands: list[Command] = []
    unsupported = list(walker.unsupported)
    background = walker.background
    for command in walker.commands:
        found = _wrapped_script(command.texts)
        if found is None:
            commands.append(command)
            continue
        inner = _parse(found[0], depth + 1)
        if inner is None:
            return None
        whole = found[1:] == (0, len(command.words)) and command.texts[0] != "eval"
        commands += [replace(command, stands_for_script=whole), *inner.commands]
        unsupported += inner.unsupported
        background = background or inner.background
    return Script(tuple(commands), tuple(dict.fromkeys(unsupported)), background)


def _wrapped_script(words: tuple[str, ...]) -> tuple[str, int, int] | None:
    """The script of the first `sh -c SCRIPT` or `eval WORDS…` in `words`, where it starts and ends.

    Only the first: that is the one that runs (`sudo bash -c …`, `xargs sh -c …`), and looking into
    every one would make `eval eval eval …` exponential.
    """
    for k, word in enumerate(words):
        if word == "eval":
            return (" ".join(words[k + 1 :]), k, len(words)) if k + 1 < len(words) else None
        if posixpath.basename(word) not in SHELLS:
            continue
        j, has_c = k + 1, False
        # A word with spaces or operators is taken as the script even where it starts with "-":
        # bash would refuse it as an option, and reading it as a script can only find more parts.
        while j < len(words) and re.fullmatch(r"[-+]{1,2}[A-Za-z][\w-]*", words[j]):
            cluster = words[j][1:] if not words[j].startswith("--") else ""
            has_c = has_c or "c" in cluster
            j += 2 if ("o" in cluster or "O" in cluster) else 1  # -o/-O take an option name
        if has_c and j < len(words):
            return words[j], k, j + 1
    return None


def _continues_inside_a_word(root: Node, source: bytes) -> bool:
    """A backslash-newline inside a word: bash joins the two halves (`r\\⏎m` is `rm`), the grammar
    splits them into two words. Between words, in quotes and in comments it reads the same."""
    for match in re.finditer(rb"\\\n", source):
        i = match.start()
        before = source[i - 1 : i]
        after = source[i + 2 : i + 3]
        if before in (b"", b" ", b"\t", b"\n") or after in (b"", b" ", b"\t", b"\n"):
            continue
        node: Node | None = root.descendant_for_byte_range(i, i + 2)
        while node is not None and node.type not in ("raw_string", "string", "heredoc_body", "comment"):
            node = node.parent
        if node is None:
            return True
    return False


_LEAVES = {"heredoc_body", "raw_string", "ansi_c_string", "comment", "string_content", "word", "number"}
_BLANK = re.compile(rb"(?:[ \t\n]|\\\n)*")


def _text_between_parts(root: Node, source: bytes) -> bool:
    """Text the grammar left out of every node: where it drops an escaped blank (`ls \\ b`, `"q"\\ w`)
    it disagrees with bash on the words. Between parts only blanks and line continuations belong;
    inside double quotes, nothing."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type in _LEAVES or node.child_count == 0:
            continue
        at = node.start_byte
        for child in node.children:
            if _left_out(node, source[at : child.start_byte]):
                return True
            stack.append(child)
            at = child.end_byte
        if _left_out(node, source[at : node.end_byte]):
            return True
    return False


def _left_out(node: Node, gap: bytes) -> bool:
    return bool(gap) and (node.type == "string" or not _BLANK.fullmatch(gap))


@dataclass(frozen=True)
class _Context:
    fed: bool = False
    substituted: bool = False
    redirects: tuple[Redirect, ...] = ()


_STATEMENTS = {"program", "list", "compound_statement", "subshell", "negated_command"}
_SEPARATORS = {";", "&&", "||", "(", ")", "{", "}", "!", "\n", ";;"}
_UNSUPPORTED_NAMES = {
    "for_statement": "a for loop",
    "c_style_for_statement": "a for loop",
    "while_statement": "a while loop",
    "if_statement": "an if statement",
    "case_statement": "a case statement",
    "function_definition": "a function definition",
    "declaration_command": "a declaration (export, declare, local…)",
    "unset_command": "unset",
    "test_command": "a [[ … ]] test",
}
_INPUT_KINDS: set[RedirectKind] = {"read", "heredoc", "herestring"}


@dataclass
class _Walker:
    source: bytes
    commands: list[Command] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    background: bool = False

    def text(self, node: Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode()

    def statement(self, node: Node, ctx: _Context, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _Unreadable
        kind = node.type
        if kind == "comment":
            return
        if kind in _STATEMENTS:
            for child in node.children:
                self._part(child, ctx, depth)
        elif kind == "pipeline":
            fed = ctx.fed
            for child in node.children:
                if child.type in ("|", "|&"):
                    fed = True
                else:
                    self._part(child, replace(ctx, fed=fed), depth)
        elif kind == "redirected_statement":
            body = node.child_by_field_name("body")
            redirects = list(ctx.redirects)
            for child in node.children:
                if child.type in ("file_redirect", "herestring_redirect", "heredoc_redirect"):
                    redirects += self.redirect(child, ctx, depth)
                elif child != body and child.is_named:
                    raise _Unreadable
            fed = ctx.fed or any(r.kind in _INPUT_KINDS for r in redirects[len(ctx.redirects) :])
            if body is not None:
                self.statement(body, replace(ctx, fed=fed, redirects=tuple(redirects)), depth + 1)
        elif kind == "command":
            self.command(node, ctx, depth)
        elif kind in ("variable_assignment", "variable_assignments"):
            assignments = [node] if kind == "variable_assignment" else list(node.named_children)
            pairs = tuple(self.assignment(a, ctx, depth) for a in assignments)
            self.commands.append(Command((), pairs, ctx.redirects, ctx.fed, ctx.substituted))
        else:
            self.unsupported.append(_UNSUPPORTED_NAMES.get(kind, f"a {kind.replace('_', ' ')}"))
            self.scan(node, ctx, depth + 1)

    def _part(self, child: Node, ctx: _Context, depth: int) -> None:
        if child.type == "&":
            self.background = True
        elif child.is_named:
            self.statement(child, ctx, depth + 1)
        elif child.type not in _SEPARATORS:
            raise _Unreadable

    def scan(self, node: Node, ctx: _Context, depth: int) -> None:
        """Commands anywhere below a construct that is not followed, so deny rules still see them."""
        if depth > _MAX_DEPTH:
            raise _Unreadable
        for child in node.children:
            if child.type in ("command_substitution", "process_substitution"):
                self.substitution(child, ctx, depth + 1)
            elif child.type in _STATEMENTS or child.type in ("pipeline", "redirected_statement", "command"):
                self.statement(child, ctx, depth + 1)
            elif child.type == "&":
                self.background = True
            else:
                self.scan(child, ctx, depth + 1)

    def substitution(self, node: Node, ctx: _Context, depth: int) -> None:
        # What `>(…)` runs reads the outer command's output: a pipe into it.
        inner = _Context(substituted=True, fed=self.text(node).startswith(">("))
        for child in node.named_children:
            self.statement(child, inner, depth + 1)

    def command(self, node: Node, ctx: _Context, depth: int) -> None:
        words: list[Word] = []
        assignments: list[tuple[str, Word]] = []
        redirects = list(ctx.redirects)
        for child in node.children:
            if child.type == "variable_assignment":
                assignments.append(self.assignment(child, ctx, depth))
            elif child.type == "command_name":
                if child.named_child_count != 1:
                    raise _Unreadable
                words.append(self.word(child.named_children[0], ctx, depth))
            elif child.type in ("file_redirect", "herestring_redirect", "heredoc_redirect"):
                redirects += self.redirect(child, ctx, depth)
            elif child.type == "comment":
                continue
            elif child.is_named:
                words.append(self.word(child, ctx, depth))
            else:
                raise _Unreadable  # `$"…"` and other tokens the grammar leaves loose
        fed = ctx.fed or any(r.kind in _INPUT_KINDS for r in redirects[len(ctx.redirects) :])
        fed = fed or any(w.piped for w in words)  # `bash <(curl …)` reads its script from a pipe
        self.commands.append(
            Command(tuple(words), tuple(assignments), tuple(redirects), fed, ctx.substituted)
        )

    def assignment(self, node: Node, ctx: _Context, depth: int) -> tuple[str, Word]:
        name = node.child_by_field_name("name")
        value = node.child_by_field_name("value")
        if name is None:
            raise _Unreadable
        if value is None:
            return self.text(name), Word("", "")
        word = self.word(value, ctx, depth)
        if word.text.startswith("~") and word.static and value.type == "word":
            word = replace(word, tilde=True)
        return self.text(name), word

    def redirect(self, node: Node, ctx: _Context, depth: int) -> list[Redirect]:
        if node.type == "herestring_redirect":
            content = [c for c in node.named_children]
            if len(content) != 1:
                raise _Unreadable
            return [Redirect("<<<", "herestring", self.word(content[0], ctx, depth))]
        if node.type == "heredoc_redirect":
            return self.heredoc(node, ctx, depth)
        op = ""
        target: Word | None = None
        for child in node.children:
            if child.type == "file_descriptor":
                continue
            if not child.is_named:
                op = child.type
            elif target is None:
                target = self.word(child, ctx, depth)
            else:
                raise _Unreadable
        if op in (">&-", "<&-") or (op in (">&", "<&") and target is not None and _is_fd(target)):
            return [Redirect(op, "dup", None)]
        if target is None:
            raise _Unreadable
        return [Redirect(op, "read" if op in ("<", "<&") else "write", target)]

    def heredoc(self, node: Node, ctx: _Context, depth: int) -> list[Redirect]:
        """`<<EOF`: the grammar hangs what follows the operator on the line (`| sh`, `&& ls`,
        `> file`) below the here-document, so those are read here."""
        found: list[Redirect] = []
        body = Word("", "")
        quoted = False
        fed = False
        for child in node.children:
            kind = child.type
            if kind == "heredoc_start":
                quoted = any(c in self.text(child) for c in "'\"\\")
            elif kind == "heredoc_body":
                source = self.text(child)
                dynamic = not quoted and any(c.type != "heredoc_content" for c in child.named_children)
                body = Word(RUNTIME if dynamic else source, source, static=not dynamic)
                if not quoted:
                    self.scan(child, ctx, depth + 1)
            elif kind in ("file_redirect", "herestring_redirect"):
                found += self.redirect(child, ctx, depth)
            elif kind in ("|", "|&"):
                fed = True
            elif kind == "&":
                self.background = True
            elif child.is_named and kind not in ("heredoc_end",):
                self.statement(child, _Context(fed=fed, substituted=ctx.substituted), depth + 1)
                fed = False
            elif not child.is_named and kind not in ("<<", "<<-", *_SEPARATORS):
                raise _Unreadable
        return [Redirect("<<", "heredoc", body), *found]

    def word(self, node: Node, ctx: _Context, depth: int) -> Word:
        if depth > _MAX_DEPTH:
            raise _Unreadable
        kind = node.type
        source = self.text(node)
        if kind == "word":
            return _unquoted(source)
        if kind == "number":
            return Word(source, source) if source.isdigit() else _unquoted(source)
        if kind == "raw_string":
            return Word(source[1:-1], source)
        if kind == "ansi_c_string":
            decoded = _ansi_c(source[2:-1])
            return Word(decoded, source) if decoded is not None else Word(RUNTIME, source, static=False)
        if kind == "string":
            parts: list[str] = []
            static = True
            for child in node.children:
                if child.type == '"':
                    continue
                if child.type == "string_content":
                    parts.append(_double_quoted(self.text(child)))
                else:
                    self._dynamic(child, ctx, depth)
                    parts.append(RUNTIME)
                    static = False
            return Word("".join(parts), source, static=static)
        if kind == "concatenation":
            pieces = [self.word(child, ctx, depth + 1) for child in node.children]
            unquoted = "".join(
                p.source for p, c in zip(pieces, node.children, strict=True) if c.type == "word"
            )
            brace = "{" in unquoted and "}" in unquoted and ("," in unquoted or ".." in unquoted)
            return Word(
                "".join(p.text for p in pieces) if not brace else RUNTIME,
                source,
                static=all(p.static for p in pieces) and not brace,
                glob=any(p.glob for p in pieces),
                tilde=pieces[0].tilde,
                piped=any(p.piped for p in pieces),
            )
        if kind in ("simple_expansion", "expansion", "arithmetic_expansion", "command_substitution"):
            self._dynamic(node, ctx, depth)
            return Word(RUNTIME, source, static=False)
        if kind == "process_substitution":
            self._dynamic(node, ctx, depth)
            return Word(RUNTIME, source, static=False, piped=source.startswith("<("))
        raise _Unreadable

    def _dynamic(self, node: Node, ctx: _Context, depth: int) -> None:
        if node.type in ("command_substitution", "process_substitution"):
            self.substitution(node, ctx, depth + 1)
        else:
            self.scan(node, ctx, depth + 1)  # ${x:-$(cmd)} runs cmd


def _is_fd(word: Word) -> bool:
    return word.static and (word.text.isdigit() or word.text == "-")


def _unquoted(source: str) -> Word:
    """An unquoted word: backslash escapes, globs, a leading ~, brace lists."""
    if re.search(r"[$`]", re.sub(r"\\.", "", source)):  # the grammar makes these expansions: not understood
        return Word(RUNTIME, source, static=False)
    out: list[str] = []
    glob = False
    i = 0
    while i < len(source):
        ch = source[i]
        if ch == "\\" and i + 1 < len(source):
            out.append(source[i + 1])
            i += 2
            continue
        glob = glob or ch in "*?["
        out.append(ch)
        i += 1
    text = "".join(out)
    unescaped = re.sub(r"\\.", "", source)
    if "{" in unescaped and "}" in unescaped and ("," in unescaped or ".." in unescaped):
        return Word(RUNTIME, source, static=False)  # {a,b} and {1..9} become several words
    return Word(text, source, glob=glob, tilde=source.startswith("~"))


def _double_quoted(content: str) -> str:
    # In double quotes a backslash escapes only $ ` " \ and newline; elsewhere it stays.
    return re.sub(r"\\([$`\"\\\n])", lambda m: "" if m.group(1) == "\n" else m.group(1), content)


_C_ESCAPES = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_C_ESCAPES |= {"v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}


def _ansi_c(body: str) -> str | None:
    """The value of $'…'; None for an escape not decoded here (then the word counts as unknown)."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in _C_ESCAPES:
            out.append(_C_ESCAPES[nxt])
            i += 2
        elif m := re.match(r"[0-7]{1,3}", body[i + 1 :]):
            out.append(chr(int(m.group(), 8) & 0xFF))
            i += 1 + len(m.group())
        elif m := re.match(r"x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{1,4})|U([0-9a-fA-F]{1,8})", body[i + 1 :]):
            code = int(next(g for g in m.groups() if g), 16)
            if code > 0x10FFFF:
                return None
            out.append(chr(code))
            i += 1 + len(m.group())
        else:
            return None  # \cX, a trailing backslash: rare enough to leave to a person
    return "".join(out)
