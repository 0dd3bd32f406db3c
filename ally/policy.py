"""Who may do what: decide a Codex approval request from config rules, the chat's mode and session grants.

Pure: no I/O, no clocks, no filesystem. The turn workflow runs it in a local activity, so each
verdict is recorded in the turn's history and a later change of these rules never changes a turn
being replayed (docs/operations.md, "Restarts and upgrades"). Commands are read with a bash grammar
(ally/shell.py) and judged by what their programs do (ally/effects.py); paths are judged lexically
(a symlink inside the workspace that points out of it is not seen). It is a filter in front of a
person and the Codex sandbox, not a sandbox itself.

Precedence, whatever the order of the rules: a matching deny rule declines; a command that pipes
into a shell or interpreter, or that cannot be read, goes to a person; otherwise an allow rule, a
session grant or the mode may accept; otherwise a person is asked (decision None), and the verdict
says why.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Literal

from ally.contracts import AgentRequest, CommandGrant, Mode, PolicyConfig, Rule, SessionGrants, Verdict
from ally.effects import (
    HARMLESS,
    PERSON,
    READS,
    WORKSPACE,
    Effect,
    fed_evaluator,
    inside,
    outside_place,
    part_effects,
)
from ally.effects import normal as _normal
from ally.effects import resolve as _resolve
from ally.shell import Command, Script, parse_script

PathClass = Literal["inside", "outside"]

_QUIET = {"/dev/null", "/dev/stdout", "/dev/stderr"}  # writing there changes no file
# The most each mode runs on its own (ally/effects.py levels); ask runs nothing on its own.
MODE_LEVELS: dict[str, int] = {"ask": -1, "read_only": READS, "trusted": WORKSPACE}
MODE_SUMMARIES = {
    HARMLESS: "harmless, reads no file",
    READS: "reads only, inside the workspace",
    WORKSPACE: "every effect inside the workspace",
}


def remember(grants: SessionGrants, request: AgentRequest) -> SessionGrants:
    """The grants after a person answered `acceptForSession` to `request`.

    Commands are remembered as the exact text with its cwd: any looser normal form would equate
    `rm '*'` with `rm *`, and the same words in another directory touch other files. File changes
    remember their paths (grant root included). Other kinds are not remembered: Codex keeps a
    session-scoped permission itself, and elicitations have no session scope.
    """
    if request.kind == "command" and (request.command or "").strip():
        grant = _command_grant(request)
        if grant not in grants.commands:
            return grants.model_copy(update={"commands": (*grants.commands, grant)})
    if request.kind == "file_change" and (paths := _file_paths(request)):
        merged = tuple(sorted(set(grants.paths) | {_normal(p) for p in paths}))
        return grants.model_copy(update={"paths": merged})
    return grants


def _command_grant(request: AgentRequest) -> CommandGrant:
    cwd = _normal(request.cwd) if request.cwd is not None else None
    return CommandGrant(command=(request.command or "").strip(), cwd=cwd)


def evaluate(
    request: AgentRequest,
    *,
    policy: PolicyConfig,
    mode: Mode,
    workspace: str,
    grants: SessionGrants,
    group: bool = False,
) -> Verdict:
    """Decide `request` for a chat in `mode`, whose Codex thread works in `workspace` (an absolute path).

    A deny rule declines whatever else applies. Permissions and elicitations are accepted only by an
    allow rule naming their kind; user input and unknown requests always go to a person. In a group
    chat nothing that names a place outside the workspace is accepted by a rule or a mode.
    """
    if request.kind in ("user_input", "other"):
        return Verdict(decision=None, rule=f"{request.kind} requests always go to a person")
    script = parse_script(request.command or "") if request.kind == "command" else None
    classes = _path_classes(request, workspace)
    for number, rule in enumerate(policy.rules, 1):
        if rule.action == "deny" and _denies(rule, request, script, classes):
            return Verdict(decision="decline", rule=f"deny rule #{number} ({rule.describe()})")
    if request.kind == "command":
        return _command_verdict(request, script, classes, policy, mode, workspace, grants, group)
    for number, rule in enumerate(policy.rules, 1):
        if rule.action == "allow" and request.kind in rule.kinds and _paths_fit(rule, classes, every=True):
            if group and request.kind == "permissions" and _file_system(request.permissions):
                return Verdict(decision=None, rule="in a group chat, file-system permissions need a person")
            return Verdict(decision="accept", rule=f"allow rule #{number} ({rule.describe()})")
    if request.kind == "file_change" and (paths := _file_paths(request)):
        if {_normal(p) for p in paths} <= set(grants.paths):
            return Verdict(decision="accept", rule="session grant")
        if mode == "trusted" and classes == {"inside"}:
            return Verdict(decision="accept", rule="mode trusted: all changed paths inside the workspace")
        if "outside" in classes:
            return Verdict(decision=None, rule="it changes files outside the workspace")
    kind = request.kind.replace("_", " ")
    return Verdict(decision=None, rule=f"no rule and not the mode ({mode}) decide this {kind}")


def _command_verdict(
    request: AgentRequest,
    script: Script | None,
    classes: set[PathClass],
    policy: PolicyConfig,
    mode: Mode,
    workspace: str,
    grants: SessionGrants,
    group: bool,
) -> Verdict:
    if script is None or not script.commands:
        return Verdict(decision=None, rule="the command could not be read completely")
    if evaluator := fed_evaluator(script):
        # Whatever the rules and grants say: the code that runs is not on the line anyone approved.
        return Verdict(decision=None, rule=f"it pipes code into a shell or interpreter ({evaluator})")
    outside = outside_place(script, cwd=request.cwd, workspace=workspace) if group else None
    cwd = _resolve(request.cwd or "", workspace) if request.cwd else None
    effects = list(zip(script.commands, part_effects(script, cwd=cwd, workspace=workspace), strict=True))
    writes = any(
        r.kind == "write" and _normal(r.target.text) not in _QUIET
        for c in script.commands
        for r in c.redirects
        if r.target
    )
    reasons: list[str] = []  # every part must be allowed by something; name each thing that did
    mode_level = HARMLESS
    refused: str | None = None
    # `sh -c SCRIPT` stands for SCRIPT's parts (which follow it) when allow rules cover them; the
    # modes never run code handed to a shell, so its parts then cannot be theirs.
    nested = next((effect for part, effect in effects if part.stands_for_script), None)
    for part, effect in effects:
        if part.stands_for_script:
            continue
        rule = next(
            (
                f"allow rule #{number} ({rule.describe()})"
                for number, rule in enumerate(policy.rules, 1)
                if rule.action == "allow" and _allows_part(rule, part, writes, classes)
            ),
            None,
        )
        if rule is not None and not script.unsupported:
            reasons.append(rule)
        elif effect.level <= MODE_LEVELS[mode] and nested is None:
            reasons.append(f"mode {mode}")
            mode_level = max(mode_level, effect.level)
        else:
            refused = refused or _why_not(nested or effect, mode)
    if refused is None and reasons and not (group and outside):
        shown = [r if r != f"mode {mode}" else f"mode {mode}: {MODE_SUMMARIES[mode_level]}" for r in reasons]
        return Verdict(decision="accept", rule=" + ".join(dict.fromkeys(shown)))
    if _command_grant(request) in grants.commands:
        return Verdict(decision="accept", rule="session grant")
    if refused is None and outside:
        return Verdict(decision=None, rule=f"in a group chat, {outside}")
    return Verdict(decision=None, rule=refused or "the command could not be read completely")


def _why_not(effect: Effect, mode: Mode) -> str:
    if effect.level == PERSON:
        return effect.reason
    if mode == "ask":
        return f"this chat's autonomy is ask ({effect.reason})"
    return f"{effect.reason}: more than {mode} runs on its own"


def _allows_part(rule: Rule, part: Command, writes: bool, classes: set[PathClass]) -> bool:
    if "command" not in rule.kinds or not _paths_fit(rule, classes, every=True):
        return False
    # A prefix names a program, not what a redirect overwrites: `git status > ~/.bashrc` needs a person.
    want = rule.prefix_words
    return not want or (not writes and part.texts[: len(want)] == want)


def _denies(rule: Rule, request: AgentRequest, script: Script | None, classes: set[PathClass]) -> bool:
    if request.kind not in rule.kinds or not _paths_fit(rule, classes, every=False):
        return False
    if not rule.command_prefix:
        return True
    # An unreadable command is still checked, on its bare words, so a deny rule cannot be dodged by a
    # stray quote. Deny matches at any word (sudo, env, xargs, find -exec) and by program basename;
    # a word known only at run time (`rm${IFS}-rf`) is checked by its literal pieces.
    if script is None:
        text = (request.command or "").replace("\\\n", "")
        parts: list[tuple[str, ...]] = [tuple(re.findall(r"[^\s;&|()<>'\"`\\]+", text))]
    else:
        commands = [*script.commands, *([script.wrapper] if script.wrapper else [])]
        parts = [
            tuple(piece for word in c.words for piece in ((word.text,) if word.static else word.fragments))
            for c in commands
        ]
    want = rule.prefix_words
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


def _file_system(permissions: dict[str, Any]) -> bool:
    return bool(permissions.get("fileSystem") or permissions.get("file_system"))


# --- Paths (lexical only) ----------------------------------------------------------------------


def classify(path: str | None, workspace: str) -> PathClass:
    """Inside or outside the workspace, lexically; `..` escapes and unplaceable paths are outside."""
    return "inside" if inside(path, workspace) else "outside"


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
