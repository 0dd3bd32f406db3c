"""The policy as it was before verdicts were recorded (ally/policy.py): frozen, for replay only.

Turns started before the upgrade evaluated the policy inside the workflow, so replaying them must
take the decisions they took then; workflows/turn.py calls this where `workflow.patched(
"policy-verdict-recorded")` is false. Never change what it decides. It can go once no turn that
started before that patch is still running (docs/operations.md, "Restarts and upgrades").
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ally.contracts import AgentRequest, CommandGrant, PolicyConfig, Rule, SessionGrants, Verdict

Mode = Literal["ask", "read_only", "trusted"]
PathClass = Literal["inside", "outside"]
_SHELLS = {"sh", "bash", "zsh", "dash", "ksh"}
_DEVICES = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin"}
_RUNTIME_PROGRAM = re.compile(r"[$*?\[]|\{.*(,|\.\.).*\}")  # expansions, globs, brace lists
_MAX_NESTING = 8  # bash -lc "sh -c '…'" and $( $( … ) ) deeper than this are not judged: ask


def _prefix_words(rule: Rule) -> tuple[str, ...]:
    return tuple(shlex.split(rule.command_prefix)) if rule.command_prefix else ()


def _describe(rule: Rule) -> str:
    parts = [f'command_prefix "{rule.command_prefix}"'] if rule.command_prefix else []
    parts += [f"paths {rule.paths}"] if rule.paths else []
    parts += [f"kinds {', '.join(rule.kinds)}"] if rule.kinds != ["command"] else []
    return ", ".join(parts) or "any command"


def _command_grant(request: AgentRequest) -> CommandGrant:
    cwd = _normal(request.cwd) if request.cwd is not None else None
    return CommandGrant(command=(request.command or "").strip(), cwd=cwd)


def evaluate(
    request: AgentRequest, *, policy: PolicyConfig, mode: Mode, workspace: str, grants: SessionGrants
) -> Verdict:
    """Decide `request` for a chat in `mode`, whose Codex thread works in `workspace` (an absolute path).

    A deny rule declines whatever else applies. Permissions and elicitations are accepted only by an
    allow rule naming their kind; user input and unknown requests always go to a person.
    """
    if request.kind in ("user_input", "other"):
        return Verdict(decision=None, rule=f"{request.kind} requests always go to a person")
    parsed = parse_command(request.command or "") if request.kind == "command" else None
    classes = _path_classes(request, workspace)
    for number, rule in enumerate(policy.rules, 1):
        if rule.action == "deny" and _denies(rule, request, parsed, classes):
            return Verdict(decision="decline", rule=f"deny rule #{number} ({_describe(rule)})")
    if request.kind == "command":
        return _allow_command(request, parsed, classes, policy, mode, workspace, grants)
    for number, rule in enumerate(policy.rules, 1):
        if rule.action == "allow" and request.kind in rule.kinds and _paths_fit(rule, classes, every=True):
            return Verdict(decision="accept", rule=f"allow rule #{number} ({_describe(rule)})")
    if request.kind == "file_change" and (paths := _file_paths(request)):
        if {_normal(p) for p in paths} <= set(grants.paths):
            return Verdict(decision="accept", rule="session grant")
        if mode == "trusted" and classes == {"inside"}:
            return Verdict(decision="accept", rule="mode trusted: all changed paths inside the workspace")
    return Verdict(decision=None, rule=f"mode {mode}: no rule decides this {request.kind.replace('_', ' ')}")


def _allow_command(
    request: AgentRequest,
    parsed: ParsedCommand | None,
    classes: set[PathClass],
    policy: PolicyConfig,
    mode: Mode,
    workspace: str,
    grants: SessionGrants,
) -> Verdict:
    if parsed is None or not parsed.judged:
        return Verdict(decision=None, rule="the command is empty or could not be read: a person decides")
    reasons: list[str] = []  # every part must be allowed by something; name each thing that did
    for part in parsed.judged:
        reason = next(
            (
                f"allow rule #{number} ({_describe(rule)})"
                for number, rule in enumerate(policy.rules, 1)
                if rule.action == "allow" and _allows_part(rule, part, parsed.writes, classes)
            ),
            None,
        )
        # Modes are cumulative: trusted also takes what read_only takes, wherever the cwd is.
        safe = not parsed.writes and is_read_only(part, dynamic=parsed.dynamic)
        if reason is None and mode != "ask" and safe:
            reason = f"mode {mode}: safe read-only command"
        if reason is None:
            break
        reasons.append(reason)
    else:
        return Verdict(decision="accept", rule=" + ".join(dict.fromkeys(reasons)))
    if _command_grant(request) in grants.commands:
        return Verdict(decision="accept", rule="session grant")
    if mode == "trusted" and classes == {"inside"}:
        cwd = _resolve(request.cwd or "", workspace)
        if cwd and not _mentions_outside(parsed, cwd, workspace):
            return Verdict(decision="accept", rule="mode trusted: cwd inside the workspace")
    return Verdict(decision=None, rule=f"mode {mode}: no rule allows every part of this command")


def _allows_part(rule: Rule, part: tuple[str, ...], writes: bool, classes: set[PathClass]) -> bool:
    if "command" not in rule.kinds or not _paths_fit(rule, classes, every=True):
        return False
    # A prefix names a program, not what a redirect overwrites: `git status > ~/.bashrc` needs a person.
    want = _prefix_words(rule)
    return not want or (not writes and part[: len(want)] == want)


def _denies(rule: Rule, request: AgentRequest, parsed: ParsedCommand | None, classes: set[PathClass]) -> bool:
    if request.kind not in rule.kinds or not _paths_fit(rule, classes, every=False):
        return False
    if not rule.command_prefix:
        return True
    # An unreadable command is still checked, on its bare words, so a deny rule cannot be dodged by a
    # stray quote. Deny matches at any word (sudo, env, xargs, find -exec) and by program basename.
    parts = parsed.parts if parsed else (tuple(re.findall(r"[^\s;&|()<>'\"`\\]+", request.command or "")),)
    want = _prefix_words(rule)
    return any(
        posixpath.basename(words[i]) == posixpath.basename(want[0])
        and words[i + 1 : i + len(want)] == want[1:]
        for words in parts
        for i in range(len(words))
    )


def _paths_fit(rule: Rule, classes: set[PathClass], *, every: bool) -> bool:
    """Allow rules need every path in their class; one path suffices for a deny rule."""
    if rule.paths is None:
        return True
    want: PathClass = "inside" if rule.paths == "inside_workspace" else "outside"
    return classes == {want} if every else want in classes


# --- Paths (lexical only) ----------------------------------------------------------------------


def _normal(path: str) -> str:
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("/") else norm  # POSIX keeps a leading "//"


def _resolve(path: str, base: str) -> str | None:
    """`path` made absolute against `base`, normalized; None when it cannot be placed (~, relative base)."""
    if path.startswith("~"):
        return None
    joined = _normal(posixpath.join(base, path))
    return joined if joined.startswith("/") else None


def classify(path: str | None, workspace: str) -> PathClass:
    """Inside or outside the workspace, lexically; `..` escapes and unplaceable paths are outside."""
    root = _resolve(workspace, "/") if workspace.startswith("/") else None
    resolved = _resolve(path, root) if path and root else None  # no cwd or path given: unknown
    if root is None or resolved is None:
        return "outside"
    return "inside" if resolved == root or resolved.startswith(root.rstrip("/") + "/") else "outside"


def _file_paths(request: AgentRequest) -> list[str]:
    """Every path a file change touches, its grant root included; [] when the diff is missing.

    The runtime renders each change of the fileChange item as a "*** <kind> <path>" header
    (ally/codex/runtime.py _render_changes); a move as "<path> -> <move_path>". A header faked inside
    an added file's content only adds paths, which can make an allow or a grant fail, never succeed.
    """
    headers = re.findall(r"^\*\*\* \S+ (.+)$", request.diff or "", flags=re.MULTILINE)
    changed = [path for header in headers for path in header.split(" -> ")]
    return [*changed, request.cwd] if changed and request.cwd else changed  # cwd here = grantRoot


def _path_classes(request: AgentRequest, workspace: str) -> set[PathClass]:
    if request.kind == "file_change":
        paths = _file_paths(request)
        return {classify(p, workspace) for p in paths} if paths else {"outside"}  # unknown: outside
    if request.kind in ("command", "permissions"):
        return {classify(request.cwd, workspace)}
    return set()


def _mentions_outside(parsed: ParsedCommand, cwd: str, workspace: str) -> bool:
    """Trusted mode's second look: a word naming a place outside the workspace (`cd ..`, `~/x`,
    `> /etc/x`) or known only at run time (`$HOME`, `$(…)`; a program like `rm$x`, `/bin/r?` or
    `/bin/{rm,ls}` that no deny rule could recognize) needs a person even when the cwd is inside.
    A program's own path (`/usr/bin/make`) is not a place it writes."""
    if any(_RUNTIME_PROGRAM.search(words[0]) for words in parsed.judged):
        return True
    for word in [*(w for words in parsed.judged for w in words[1:]), *parsed.targets]:
        for candidate in (word, word.partition("=")[2]):
            if candidate in _DEVICES:
                continue
            if "$" in candidate or candidate.startswith("~"):
                return True
            placed = candidate.startswith("/") or ".." in candidate.split("/")
            if placed and classify(_resolve(candidate, cwd), workspace) == "outside":
                return True
    return False


# --- Commands ----------------------------------------------------------------------------------

# Safe read-only programs, with the options that would make them write or run something.
_READ_ONLY: dict[tuple[str, ...], frozenset[str]] = {
    **{(name,): frozenset() for name in ("ls", "cat", "head", "tail", "wc", "pwd", "cd", "grep")},
    ("rg",): frozenset({"--pre"}),  # --pre runs a program on every file
    ("find",): frozenset(
        {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"}
    ),
    **{("git", sub): frozenset({"--output", "--ext-diff"}) for sub in ("status", "log", "diff", "show")},
}
_SED_OPTIONS = {"-n", "-E", "-r", "-nE", "-En", "-nr", "-rn", "--quiet", "--silent", "--regexp-extended"}
_SED_PRINT = re.compile(r"(\d+|\$)(,(\d+|\$))?p")  # `sed -n '10,80p' f`; GNU sed's w/e/s///e write or run


def is_read_only(words: tuple[str, ...], *, dynamic: bool = False) -> bool:
    """One simple command's words (redirects aside) on the conservative read-only list.

    With `dynamic` words (`$x`, `$(…)`, a glob) an option we refuse could appear at run time (a file
    named `-delete` matched by `find *`), so programs that have such options are not read-only then.
    """
    if words[:1] == ("sed",):
        return not dynamic and _sed_prints_only(words[1:])
    for prefix, forbidden in _READ_ONLY.items():
        if words[: len(prefix)] == prefix:
            return not (forbidden and dynamic) and not any(
                _names_option(w, forbidden) for w in words[len(prefix) :]
            )
    return False


def _names_option(word: str, options: frozenset[str]) -> bool:
    # Options may come after operands (GNU argument permutation), and git accepts any unambiguous
    # abbreviation of a long option (`--outp=x` is --output), so match on prefixes of those too.
    name = word.split("=", 1)[0]
    return name in options or (
        name.startswith("--") and len(name) > 2 and any(o.startswith(name) for o in options)
    )


def _sed_prints_only(args: tuple[str, ...]) -> bool:
    scripts, operands, rest = [], [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-e" and rest:
            scripts.append(rest.pop(0))
        elif arg.startswith("-") and arg != "-":
            if arg not in _SED_OPTIONS:
                return False  # -i, --in-place, -f script files, -s, …
        else:
            operands.append(arg)
    scripts = scripts or operands[:1]
    return bool(scripts) and all(_SED_PRINT.fullmatch(script) for script in scripts)


_EXPANSION = re.compile(r"\$[\w{@*#?$!-]")  # $name ${…} $1 $@ …: a word whose value is known only at run time


class _Token(NamedTuple):
    kind: Literal["word", "sep", "write", "read", "dynamic"]
    text: str = ""


@dataclass(frozen=True)
class ParsedCommand:
    parts: tuple[tuple[str, ...], ...]  # every simple command, wrappers and substituted ones included
    judged: tuple[tuple[str, ...], ...]  # the parts an allow must cover: wrappers stand for their inner parts
    targets: tuple[str, ...]  # file names after < > >> <<< …
    writes: bool  # an output redirect (>, >>, &>, >|) somewhere
    dynamic: bool  # an expansion ($x, $(…), `…`) or an unquoted glob somewhere: words known only at run time


def parse_command(text: str, depth: int = 0) -> ParsedCommand | None:
    """Split a shell command into simple commands; None when it cannot be read (bad quoting, too deep).

    Separators are ; & && || | |& ( ) and newlines. $(…) and `…` bodies are commands of their own
    (the word keeps a "$…" placeholder). The script of `sh -c 'script'` and the words of `eval …` are
    parsed too; a command that is nothing but `bash -lc 'script'` (how Codex runs things) stands for
    its script, so an allow must cover the script's parts, not the wrapper.
    """
    nested: list[list[_Token]] = []
    try:
        top, _ = _lex(text, 0, "", nested, depth)
    except ValueError:
        return None
    writes = any(token.kind == "write" for tokens in (top, *nested) for token in tokens)
    dynamic = any(token.kind == "dynamic" for tokens in (top, *nested) for token in tokens)
    parts: list[tuple[str, ...]] = []
    judged: list[tuple[str, ...]] = []
    targets: list[str] = []
    for tokens in (top, *nested):
        commands, redirected = _simple_commands(tokens)
        targets += redirected
        for words in commands:
            found = _wrapped_script(words)
            inner = parse_command(found[0], depth + 1) if found else ParsedCommand((), (), (), False, False)
            if inner is None:
                return None
            stands_for_script = found is not None and found[1:] == (0, len(words)) and words[0] != "eval"
            parts += [words, *inner.parts]
            judged += [*([] if stands_for_script else [words]), *inner.judged]
            targets += inner.targets
            writes, dynamic = writes or inner.writes, dynamic or inner.dynamic
    return ParsedCommand(tuple(parts), tuple(judged), tuple(targets), writes, dynamic)


def _simple_commands(tokens: list[_Token]) -> tuple[list[tuple[str, ...]], list[str]]:
    """The words of each simple command, and apart from them the redirect targets: in `< cat rm x`
    the program is rm, and "cat" only a file name."""
    found: list[tuple[str, ...]] = []
    targets: list[str] = []
    current: list[str] = []
    after_redirect = False
    for token in [*tokens, _Token("sep")]:
        if token.kind == "word":
            (targets if after_redirect else current).append(token.text)
            after_redirect = False
        elif token.kind in ("read", "write"):
            after_redirect = True
        elif token.kind == "sep":
            found += [tuple(current)] if current else []
            current, after_redirect = [], False
    return found, targets


def _wrapped_script(words: tuple[str, ...]) -> tuple[str, int, int] | None:
    """The script of the first `sh -c SCRIPT` or `eval WORDS…` in `words`, where it starts and ends.

    Only the first: that is the one that runs (`sudo bash -c …`, `xargs sh -c …`), and looking into
    every one would make `eval eval eval …` exponential.
    """
    for k, word in enumerate(words):
        if word == "eval":
            return " ".join(words[k + 1 :]), k, len(words)
        if posixpath.basename(word) not in _SHELLS:
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


def _lex(text: str, i: int, closer: str, nested: list[list[_Token]], depth: int) -> tuple[list[_Token], int]:
    """Bash-like tokens of `text` from i up to an unquoted `closer` ("" = end); returns the index after it.

    Quoted and escaped operator characters stay word characters (`find -exec rm {} \\;` has a word
    ";", not a separator), which plain shlex cannot tell apart.
    """
    tokens: list[_Token] = []
    word: list[str] = []
    in_word, quote, parens, n = False, "", 0, len(text)

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            tokens.append(_Token("word", "".join(word)))
            word.clear()
            in_word = False

    while i < n:
        ch, nxt = text[i], text[i + 1 : i + 2]
        if quote == "'":
            quote = "" if ch == "'" else quote
            word.extend(ch if quote else "")
            i += 1
            continue
        if ch == "\\" and nxt == "\n":  # a line continuation joins words across lines
            i += 2
            continue
        if ch == "\\":  # in double quotes it escapes only " \\ $ `; a trailing one is literal
            word.extend(("\\" if (quote and nxt not in '"\\$`') or not nxt else "") + nxt)
            in_word, i = True, i + 2
        elif (ch == "$" and nxt == "(") or (ch == "`" and closer != "`"):
            if depth >= _MAX_NESTING:
                raise ValueError("nested too deep")
            inner, i = _lex(text, i + (2 if ch == "$" else 1), ")" if ch == "$" else "`", nested, depth + 1)
            nested.append(inner)
            tokens.append(_Token("dynamic"))
            word.append("$…")
            in_word = True
        elif ch == "$" and nxt and nxt in "'\"" and not quote:  # $'…' and $"…" are quoting, not expansion
            i += 1
        elif quote == '"':
            quote = "" if ch == '"' else quote
            word.extend(ch if quote else "")
            tokens.extend([_Token("dynamic")] if _EXPANSION.match(text, i) else [])
            i += 1
        elif ch == closer and (closer == "`" or parens == 0):
            end_word()
            return tokens, i + 1
        elif ch in "'\"":
            quote, in_word, i = ch, True, i + 1
        elif ch == "#" and not in_word:  # a comment runs to the end of the line
            while i < n and text[i] != "\n":
                i += 1
        elif ch in " \t\r":
            end_word()
            i += 1
        elif ch in "<>" or (ch == "&" and nxt == ">"):
            end_word()
            j = i + 1
            while j < n and text[j] in "<>&|" and j - i < 3:
                j += 1
            op = text[i:j]
            dup = op.endswith("&") and re.match(r"(\d+|-)(?![^\s;&|()<>])", text[j:]) is not None
            tokens.append(_Token("write" if ">" in op and not dup else "read", op))  # 2>&1 writes no file
            i = j
        elif ch in ";&|()\n":
            end_word()
            parens += {"(": 1, ")": -1}.get(ch, 0)
            tokens.append(_Token("sep", ch))
            i += 1
        else:
            tokens.extend([_Token("dynamic")] if ch in "*?[" or _EXPANSION.match(text, i) else [])
            word.append(ch)
            in_word, i = True, i + 1
    if quote or closer:
        raise ValueError("unclosed quote or substitution")
    end_word()
    return tokens, i
