"""What a command does to the world, as far as its words tell: the least autonomy that may run it.

Pure and lexical, like the rest of the policy: paths are judged by their text (a symlink inside the
workspace that points out of it is not seen), programs by their name. Each program the modes run is
listed here with what it does and the options that would make it do more; a program not listed, or
an option not understood, is an effect that cannot be determined, and a person decides. Why each
mode draws its line where it does: docs/operations.md, "Autonomy modes".
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from ally.shell import SHELLS, Command, Script, Word

HARMLESS = 0  # reads no file, writes nothing: `pwd`, `git --version`
READS = 1  # reads files: read_only runs it when every file is inside the workspace
WORKSPACE = 2  # changes files or runs the project's own tools: trusted runs it inside the workspace
PERSON = 3  # anything else: a person decides

LEVEL_NAMES = {HARMLESS: "harmless", READS: "read-only", WORKSPACE: "changes the workspace", PERSON: "person"}


@dataclass(frozen=True)
class Effect:
    level: int
    reason: str  # what makes it this level: "reads files (cat)", "network access (curl)"


# --- Places --------------------------------------------------------------------------------------

DEVICES_ALLOWED = {"/dev/null", "/dev/stdin", "/dev/stdout", "/dev/stderr"}
SYSTEM_BINS = ("/bin/", "/usr/bin/", "/usr/local/bin/", "/sbin/", "/usr/sbin/")


def normal(path: str) -> str:
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("/") else norm  # POSIX keeps a leading "//"


def resolve(path: str, base: str) -> str | None:
    """`path` made absolute against `base`, normalized; None when it cannot be placed (~, relative base)."""
    if path.startswith("~"):
        return None
    joined = normal(posixpath.join(base, path))
    return joined if joined.startswith("/") else None


def inside(path: str | None, workspace: str) -> bool:
    """Lexically inside the workspace (an absolute path); `..` escapes and unplaceable paths are not."""
    root = resolve(workspace, "/") if workspace.startswith("/") else None
    resolved = resolve(path, root) if path and root else None
    if root is None or resolved is None:
        return False
    return resolved == root or resolved.startswith(root.rstrip("/") + "/")


class _Places:
    """The directories a command line may be in: its cwd and every place a `cd` in it went to.
    A relative path must be inside from each of them, since a subshell or a failed `cd` decides
    which one applies only at run time."""

    def __init__(self, cwd: str | None, workspace: str) -> None:
        self.workspace = workspace
        self.cwds = [cwd] if cwd is not None and inside(cwd, workspace) else []
        self.cwd = cwd

    def problem(self, text: str, *, writes: bool = False) -> str | None:
        """Why the place `text` names is not one the modes go to, if it is not."""
        for piece in _pieces(text):
            if piece.startswith("~"):
                return f"{text} is outside the workspace"
            if piece.startswith("/"):
                place = normal(piece)
                if place in DEVICES_ALLOWED:
                    continue
                if place.startswith("/dev/"):
                    return f"device file {place}"
                if not inside(place, self.workspace):
                    return _outside(text, writes)
            elif ".." in piece.split("/") and not all(
                inside(resolve(piece, cwd), self.workspace) for cwd in self.cwds
            ):
                return _outside(text, writes)
        return None

    def cd(self, target: str) -> None:
        self.cwds += [p for cwd in self.cwds if (p := resolve(target, cwd)) is not None]
        del self.cwds[16:]  # enough for any real chain of cds; more only makes the check stricter


def _outside(text: str, writes: bool) -> str:
    return f"writes {text}, outside the workspace" if writes else f"{text} is outside the workspace"


def _pieces(text: str) -> list[str]:
    """The parts of a word that could name a place: the word, what follows `=` `:` `,`, and what is
    glued to a short option (`-C/`, `-I/usr/include`)."""
    pieces = [text, *re.split(r"[=:,]", text)[1:]]
    if re.match(r"-[A-Za-z]", text):
        pieces.append(text[2:])
    return [p for p in pieces if p]


# --- Programs ------------------------------------------------------------------------------------

NETWORK = {
    *("curl", "wget", "ssh", "scp", "sftp", "rsync", "nc", "ncat", "netcat", "socat", "telnet", "ftp"),
    *("ping", "ping6", "traceroute", "dig", "nslookup", "host", "http", "https", "xh", "aria2c", "nmap"),
    *("gh", "hub", "aws", "gcloud", "az", "kubectl", "helm", "docker", "podman", "terraform", "mosh"),
}
PROCESSES = {
    *("kill", "pkill", "killall", "shutdown", "reboot", "halt", "poweroff", "systemctl", "service"),
    *("init", "telinit", "renice", "disown", "nohup", "setsid", "screen", "tmux", "bg", "fg", "coproc"),
}
PACKAGES = {
    *("pip", "pip3", "pipx", "uv", "uvx", "poetry", "conda", "mamba", "micromamba", "npx", "pnpx", "bunx"),
    *("apt", "apt-get", "aptitude", "dpkg", "yum", "dnf", "rpm", "zypper", "pacman", "apk", "brew"),
    *("snap", "flatpak", "gem", "bundle", "bundler", "composer", "cpan", "cpanm", "mvn", "gradle"),
    *("rustup", "nix-env", "port"),
}
SCHEDULERS = {"crontab", "at", "atq", "atrm", "batch", "systemd-run", "launchctl", "anacron"}
INTERPRETERS = {
    *("node", "nodejs", "deno", "bun", "perl", "ruby", "php", "lua", "luajit", "Rscript", "osascript"),
    *("awk", "gawk", "mawk", "nawk", "tclsh", "wish", "irb", "jshell", "pwsh", "powershell", "expect"),
    *("pypy", "pypy3", "busybox"),
}
# Programs whose job is to run another program (or text as code): what runs is not on the line.
RUNNERS = {
    *("eval", "exec", "source", ".", "command", "builtin", "xargs", "env", "sudo", "su", "doas", "pkexec"),
    *("nice", "ionice", "timeout", "time", "watch", "strace", "ltrace", "chroot", "unshare", "nsenter"),
    *("runuser", "setpriv", "stdbuf", "taskset", "flock", "parallel", "script", "unbuffer", "sg"),
}
ENVIRONMENT_DUMPS = {"printenv", "export", "declare", "typeset", "compgen"}
# Variables a command may set in front of itself: they change output, not what runs or where.
SAFE_VARIABLES = {
    *("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "NO_COLOR", "FORCE_COLOR", "CLICOLOR", "TERM"),
    *("COLUMNS", "LINES", "CI", "RUST_BACKTRACE", "RUST_LOG", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"),
    *("PYTHONHASHSEED", "PYTHONPATH", "NODE_ENV"),
}
VERSION_TOOLS = {
    *("python", "python3", "node", "npm", "git", "cargo", "rustc", "go", "make", "gcc", "clang", "java"),
    *("javac", "ruff", "mypy", "pytest", "uv", "pip", "pip3", "yarn", "pnpm", "deno", "bun", "tsc"),
    *("black", "rg", "sed", "grep"),
}
# Other spellings of --version, only where they mean that (`bash -v` is a verbose shell).
_VERSION_FLAGS = {"-V": {"python", "python3", "cargo", "rustc", "uv", "pip", "pip3"}, "-v": {"node", "npm"}}
_VERSION_FLAGS |= {"version": {"cargo", "uv", "go"}}
_VERSIONS = {("--version", t) for t in VERSION_TOOLS} | {
    (f, t) for f, ts in _VERSION_FLAGS.items() for t in ts
}


def is_python(name: str) -> bool:
    return re.fullmatch(r"python[23]?(\.\d+)?", name) is not None


def is_evaluator(name: str) -> bool:
    """A shell or interpreter: text it is given is run as code."""
    return name in SHELLS or name in INTERPRETERS or is_python(name) or name in ("source", ".", "eval")


@dataclass(frozen=True)
class _Program:
    level: int
    does: str  # "reads files", "changes files"
    forbidden: frozenset[str] = frozenset()  # options that write elsewhere, run programs or reach out
    globs: bool = True  # a file-name pattern is fine: no option of it could do harm
    paths: bool = True  # its words name places (False: they are text, like echo's)


def _p(level: int, does: str, *forbidden: str, globs: bool = True, paths: bool = True) -> _Program:
    return _Program(level, does, frozenset(forbidden), globs, paths)


_TEXT = _p(HARMLESS, "prints text", paths=False)
_INFO = _p(HARMLESS, "shows system facts", paths=False)
_READ = _p(READS, "reads files")
_CHANGE = _p(WORKSPACE, "changes files")
_TOOL = _p(WORKSPACE, "runs the project's own tools")

PROGRAMS: dict[str, _Program] = {
    **dict.fromkeys(("echo", "true", "false", ":"), _TEXT),
    "printf": _p(HARMLESS, "prints text", "-v", paths=False),  # -v sets a variable a later command sees
    **dict.fromkeys(("pwd", "whoami", "id", "uname", "nproc", "arch", "which"), _INFO),
    **dict.fromkeys(
        (
            *("ls", "cat", "head", "tail", "wc", "nl", "grep", "egrep", "fgrep", "cut", "tr", "cmp"),
            *("comm", "diff", "stat", "du", "basename", "dirname", "realpath", "readlink", "md5sum"),
            *("sha1sum", "sha256sum", "sha512sum", "cksum", "od", "strings", "column", "paste", "tac"),
            *("rev", "seq", "test", "[", "cd", "expand", "fold", "fmt"),
        ),
        _READ,
    ),
    "file": _p(READS, "reads files", "-C", "--compile"),  # -C writes a compiled magic file
    "tree": _p(READS, "reads files", "-o", "-R"),  # -o writes its listing to a file
    "sort": _p(READS, "reads files", "-o", "--output", "--compress-program"),
    "rg": _p(READS, "reads files", "--pre", "--pre-glob", "--hostname-bin", "--search-zip", "-z"),
    "find": _p(
        READS,
        "reads files",
        *("-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"),
        globs=False,  # `find *` with a file named -delete
    ),
    **dict.fromkeys(("mkdir", "touch", "cp", "mv", "rm", "rmdir", "chmod", "tee"), _CHANGE),
    **dict.fromkeys(("pytest", "py.test", "black", "isort", "flake8", "pylint", "tsc", "eslint"), _TOOL),
    **dict.fromkeys(("prettier", "jest", "vitest", "gofmt"), _TOOL),
    "mypy": _p(WORKSPACE, "runs the project's own tools", "--install-types"),  # which runs pip
}
PYTHON_TOOLS = {"pytest", "unittest", "mypy", "ruff", "black", "isort", "flake8", "pylint", "compileall"}
PYTHON_TOOLS |= {"py_compile", "doctest", "pyflakes"}


def _names_option(word: str, options: frozenset[str]) -> str | None:
    """The forbidden option `word` is, if any. Options may come after operands (GNU argument
    permutation), long ones may be abbreviated (git, GNU getopt), short ones clustered (`-iz`)."""
    name = word.split("=", 1)[0]
    if name in options:
        return name
    if name.startswith("--") and len(name) > 2:
        return next((o for o in options if o.startswith(name)), None)
    if re.fullmatch(r"-[A-Za-z0-9]{2,}", name):
        return next((o for o in options if len(o) == 2 and o[1] in name[1:]), None)
    return None


def _forbidden(args: tuple[str, ...], options: frozenset[str]) -> str | None:
    return next((found for word in args if options and (found := _names_option(word, options))), None)


# --- Programs with subcommands -------------------------------------------------------------------

_GIT_READS = {"status", "log", "diff", "show", "blame", "rev-parse", "ls-files", "ls-tree", "describe"}
_GIT_READS |= {"shortlog", "rev-list", "grep", "cat-file", "merge-base", "count-objects", "whatchanged"}
_GIT_WRITES = {"add", "commit", "checkout", "switch", "restore", "reset", "rm", "mv", "merge", "rebase"}
_GIT_WRITES |= {"cherry-pick", "revert", "init", "clean", "apply", "stash", "branch", "tag", "reflog"}
_GIT_REMOTE = {"push", "pull", "fetch", "clone", "remote", "ls-remote", "submodule", "archive"}
_GIT_REMOTE |= {"send-email", "request-pull", "svn", "p4", "daemon", "http-backend", "bundle"}
_GIT_RUNS = frozenset({"--ext-diff", "--open-files-in-pager", "-O", "--exec", "-x", "--upload-pack"})
_GIT_RUNS |= {"--receive-pack", "--unsafe-paths", "--interactive", "--edit-todo"}
_GIT_GLOBAL = {"--no-pager", "-P", "--no-optional-locks", "--literal-pathspecs", "--no-replace-objects"}
_GIT_LISTING = {"stash": {"list", "show"}, "reflog": {"show"}}


def _git(args: tuple[str, ...]) -> Effect:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "-C" and i + 1 < len(args):
            i += 2  # the directory is judged as a place with the other words
        elif args[i] in _GIT_GLOBAL:
            i += 1
        else:
            return Effect(PERSON, f"git option {args[i]} can change what git runs or where")
    if i == len(args):
        return Effect(HARMLESS, "shows git's help")
    sub, rest = args[i], args[i + 1 :]
    if sub in _GIT_REMOTE:
        return Effect(PERSON, f"talks to a remote repository (git {sub})")
    if sub == "rebase" and any(re.fullmatch(r"-[a-zA-Z]*i[a-zA-Z]*", w) for w in rest):
        return Effect(PERSON, "git rebase -i runs the editor git is configured with")
    if option := _forbidden(rest, _GIT_RUNS):
        return Effect(PERSON, f"git {sub} {option} runs other programs")
    writes_output = _forbidden(rest, frozenset({"--output"}))
    if sub in _GIT_READS and not writes_output:
        return Effect(READS, f"reads the repository (git {sub})")
    positional = [w for w in rest if not w.startswith("-")]
    if sub in ("branch", "tag") and not positional and all(_git_lists(w) for w in rest):
        return Effect(READS, f"reads the repository (git {sub})")
    if sub in _GIT_LISTING and ((rest and rest[0] in _GIT_LISTING[sub]) or (not rest and sub == "reflog")):
        return Effect(READS, f"reads the repository (git {sub})")
    if sub in _GIT_WRITES or sub in _GIT_READS:
        return Effect(WORKSPACE, f"changes the repository (git {sub})")
    return Effect(PERSON, f"git {sub} is not a git command the modes know")


def _git_lists(option: str) -> bool:
    listing = {"-a", "--all", "-r", "--remotes", "-v", "-vv", "--verbose", "-l", "--list"}
    return option in listing or option in ("--show-current", "--merged", "--no-merged", "--contains")


def _python(name: str, args: tuple[str, ...]) -> Effect:
    i = 0
    while i < len(args) and re.fullmatch(r"-[BuOqEsIb]+|-OO|-bb", args[i]):
        i += 1
    if i == len(args):
        return Effect(PERSON, f"shell or interpreter evaluation ({name} reads code from its input)")
    flag = args[i]
    if flag in ("-c", "-"):
        return Effect(PERSON, f"shell or interpreter evaluation ({name} {flag})")
    if flag == "-m" and i + 1 < len(args):
        module, rest = args[i + 1], args[i + 2 :]
        if module in ("pip", "ensurepip", "venv", "pipx", "uv"):
            return Effect(PERSON, f"package manager ({name} -m {module})")
        if module.split(".")[0] in ("http", "smtpd", "ftplib", "urllib", "xmlrpc", "webbrowser"):
            return Effect(PERSON, f"network access ({name} -m {module})")
        if module in PYTHON_TOOLS:
            if module == "mypy" and (option := _forbidden(rest, PROGRAMS["mypy"].forbidden)):
                return Effect(PERSON, f"{name} -m mypy {option} runs the package manager")
            return Effect(WORKSPACE, f"runs the project's own tools ({name} -m {module})")
        return Effect(PERSON, f"runs the Python module {module}, whose effect cannot be determined")
    if flag.startswith("-"):
        return Effect(PERSON, f"{name} option {flag} is not one the modes know")
    return Effect(PERSON, f"runs a script ({name} {flag}), whose effect cannot be determined")


def _node_package_manager(name: str, args: tuple[str, ...]) -> Effect:
    sub = args[0] if args else ""
    if sub in ("test", "t", "tst", "run", "run-script") and not _forbidden(
        args, frozenset({"--script-shell"})
    ):
        if sub.startswith("run") and len(args) == 1:
            return Effect(READS, f"lists the project's scripts ({name} {sub})")
        return Effect(WORKSPACE, f"runs the project's own scripts ({name} {sub})")
    if sub in ("ls", "list") and name == "npm":
        return Effect(READS, "lists installed packages (npm ls)")
    return Effect(PERSON, f"package manager ({' '.join((name, *args[:1]))})")


_CARGO_BUILDS = {"check", "build", "test", "clippy", "run", "bench", "doc"}


def _cargo(args: tuple[str, ...]) -> Effect:
    sub = args[0] if args else ""
    if sub == "fmt":
        return Effect(WORKSPACE, "formats the project's code (cargo fmt)")
    if sub in _CARGO_BUILDS:
        if _forbidden(args, frozenset({"--config"})):
            return Effect(PERSON, "cargo --config can change what cargo runs")
        if "--offline" in args or "--frozen" in args:
            return Effect(WORKSPACE, f"builds the project offline (cargo {sub})")
        return Effect(PERSON, f"package manager: cargo {sub} may download crates (add --offline)")
    return Effect(PERSON, f"package manager (cargo {sub})".replace(" )", ")"))


def _go(args: tuple[str, ...]) -> Effect:
    sub = args[0] if args else ""
    if sub == "fmt":
        return Effect(WORKSPACE, "formats the project's code (go fmt)")
    if sub == "version":
        return Effect(HARMLESS, "shows a version (go version)")
    if sub == "generate":
        return Effect(PERSON, "shell or interpreter evaluation (go generate)")
    return Effect(PERSON, f"package manager: go {sub} may download modules".rstrip())


def _make(args: tuple[str, ...]) -> Effect:
    if option := _forbidden(args, frozenset({"--eval", "-E"})):
        return Effect(PERSON, f"shell or interpreter evaluation (make {option})")
    if override := next((w for w in args if "=" in w and not w.startswith("-")), None):
        return Effect(PERSON, f"make {override} can change what make runs")
    return Effect(WORKSPACE, "runs the project's own tools (make)")


def _ruff(args: tuple[str, ...]) -> Effect:
    sub = args[0] if args else ""
    if sub in ("check", "format", "clean"):
        return Effect(WORKSPACE, f"runs the project's own tools (ruff {sub})")
    if sub in ("rule", "version", "linter", "config"):
        return Effect(HARMLESS, f"shows ruff's documentation (ruff {sub})")
    return Effect(PERSON, f"ruff {sub} is not a ruff command the modes know")


def _set(args: tuple[str, ...]) -> Effect:
    if not args:
        return Effect(PERSON, "prints the environment (set)")
    if all(re.fullmatch(r"[-+][euxvo]+|pipefail|errexit|nounset|xtrace", a) for a in args):
        return Effect(HARMLESS, "sets shell options (set)")
    return Effect(PERSON, "set with these words changes the shell's arguments or options")


def _command(args: tuple[str, ...]) -> Effect:
    if args[:1] in (("-v",), ("-V",)):
        return Effect(HARMLESS, "shows where a program is (command -v)")
    return Effect(PERSON, "runs another program (command)")


def _env(args: tuple[str, ...]) -> Effect:
    if all(a in ("-0", "--null") for a in args):
        return Effect(PERSON, "prints the environment (env)")
    return Effect(PERSON, "runs another program (env)")


def _hostname(args: tuple[str, ...]) -> Effect:
    if all(a in ("-s", "-f", "--short", "--fqdn") for a in args):
        return Effect(HARMLESS, "shows system facts (hostname)")
    return Effect(PERSON, "hostname with words changes the machine's name")


def _uniq(args: tuple[str, ...]) -> Effect:
    if len([a for a in args if not a.startswith("-") or a == "-"]) > 1:
        return Effect(WORKSPACE, "changes files (uniq writes its second file)")
    return Effect(READS, "reads files (uniq)")


_SPECIAL: dict[str, Callable[[tuple[str, ...]], Effect]] = {
    "uniq": _uniq,
    "git": _git,
    "cargo": _cargo,
    "go": _go,
    "make": _make,
    "ruff": _ruff,
    "set": _set,
    "command": _command,
    "env": _env,
    "hostname": _hostname,
}


# --- sed -----------------------------------------------------------------------------------------

_SED_OPTIONS = {"-n", "-E", "-r", "-s", "-u", "-z", "--quiet", "--silent", "--regexp-extended"}
_SED_OPTIONS |= {"--separate", "--unbuffered", "--null-data", "--posix", "--sandbox", "--debug"}


def _sed(args: tuple[str, ...]) -> Effect:
    """`sed` reads; with -i it changes the files it names. Its scripts are read here: commands that
    run programs (e, s///e) or read and write other files (r R w W, s///w) need a person."""
    scripts: list[str] = []
    operands: list[str] = []
    in_place = False
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-e", "--expression") and rest:
            scripts.append(rest.pop(0))
        elif arg.startswith("--expression="):
            scripts.append(arg.partition("=")[2])
        elif arg == "-i" or arg.startswith(("-i", "--in-place")):
            in_place = True
        elif re.fullmatch(r"-[nErsuz]+", arg) or arg in _SED_OPTIONS:
            continue
        elif arg.startswith("-") and arg != "-":
            return Effect(PERSON, f"sed option {arg} is not one the modes know")
        else:
            operands.append(arg)
    if not scripts:
        if not operands:
            return Effect(PERSON, "sed without a script")
        scripts.append(operands.pop(0))
    if not all(_sed_script_is_safe(script) for script in scripts):
        return Effect(PERSON, "the sed script runs programs or writes files of its own (e, w, r)")
    if in_place:
        return Effect(WORKSPACE, "changes files (sed -i)")
    return Effect(READS, "reads files (sed)")


_SED_PLAIN = set("=dDgGhHlnNpPxzFq Q{}!;\n\t ")


def _sed_script_is_safe(script: str) -> bool:
    i, n = 0, len(script)
    while i < n:
        i = _sed_address(script, i)
        if i < 0:
            return False
        if i >= n:
            return True
        ch = script[i]
        if ch in "sy":
            if i + 1 >= n or script[i + 1] in "\\\n":
                return False
            delimiter = script[i + 1]
            i += 2
            for part in range(2):
                end = _part_end(script, i, delimiter, regex=ch == "s" and part == 0)
                if end < 0:
                    return False
                i = end + 1
            flags = re.match(r"[gpiImM0-9]*", script[i:])
            i += len(flags.group()) if flags else 0
            if i < n and script[i] not in ";}\n \t":
                return False  # e and w flags, and anything not understood
        elif ch in "aic":  # text to the end of the line
            while i < n and script[i] != "\n":
                i += 1
        elif ch in "btT:#":  # a label or a comment, to ; or the end of the line
            while i < n and script[i] not in ";\n":
                i += 1
        elif ch in _SED_PLAIN:
            i += 1
        else:
            return False  # e r R w W v and anything not understood
    return True


def _part_end(script: str, i: int, delimiter: str, *, regex: bool) -> int:
    """Index of the delimiter that ends the part starting at `i`; -1 when it cannot be told exactly.

    GNU sed does not end a regex at a delimiter inside a bracket expression (`s/[/]/;p;/e` runs
    `;p;` as a shell command). So a regex part must close every bracket it opens before the
    delimiter this scan finds, and have no backslash inside one (where bracket rules differ): then
    sed ends it at the same place.
    """
    n = len(script)
    while i < n and script[i] != delimiter:
        if script[i] == "\\":
            i += 2
            continue
        if script[i] == "\n":
            return -1
        if regex and script[i] == "[":
            i = _bracket_end(script, i, delimiter)
            if i < 0:
                return -1
        i += 1
    return i if i < n else -1


def _bracket_end(script: str, i: int, delimiter: str) -> int:
    """Index of the `]` closing the bracket expression opened at `i` (POSIX: a `]` first is literal)."""
    n = len(script)
    j = i + 1
    j += 1 if script[j : j + 1] == "^" else 0
    j += 1 if script[j : j + 1] == "]" else 0
    while j < n and script[j] != "]":
        if script[j] in ("\\", delimiter, "\n"):
            return -1
        if script[j] == "[" and script[j + 1 : j + 2] in (":", ".", "="):
            close = script.find(script[j + 1] + "]", j + 2)
            if close < 0 or delimiter in script[j:close] or "\\" in script[j:close]:
                return -1
            j = close + 2
            continue
        j += 1
    return j if j < n else -1


def _sed_address(script: str, i: int) -> int:
    """Index after the address at `i` (none is fine); -1 when it cannot be read."""
    n = len(script)
    for _ in range(2):
        while i < n and script[i] in " \t":
            i += 1
        if i < n and script[i] in "/\\":
            delimiter = "/" if script[i] == "/" else script[i + 1 : i + 2]
            i += 1 if script[i] == "/" else 2
            end = _part_end(script, i, delimiter, regex=True) if delimiter else -1
            if end < 0:
                return -1
            i = end + 1
            while i < n and script[i] in "IM":
                i += 1
        else:
            match = re.match(r"\$|[0-9]+(~[0-9]+)?|[+~][0-9]+", script[i:])
            i += len(match.group()) if match else 0
        if i < n and script[i] == ",":
            i += 1
            continue
        break
    return i


# --- Judging -------------------------------------------------------------------------------------


def _program_effect(name: str, args: tuple[str, ...]) -> tuple[Effect, _Program | None]:
    """What the program `name` does with `args`, and its table entry when it has one."""
    if len(args) == 1 and (args[0], "python" if is_python(name) else name) in _VERSIONS:
        return Effect(HARMLESS, f"shows a version ({name} {args[0]})"), None
    if name in NETWORK:
        return Effect(PERSON, f"network access ({name})"), None
    if name in PROCESSES:
        return Effect(PERSON, f"process control ({name})"), None
    if name in PACKAGES:
        return Effect(PERSON, f"package manager ({name})"), None
    if name in SCHEDULERS:
        return Effect(PERSON, f"schedules commands ({name})"), None
    if name in ENVIRONMENT_DUMPS:
        return Effect(PERSON, f"prints the environment ({name})"), None
    if name in _SPECIAL:
        return _SPECIAL[name](args), None
    if name in ("npm", "yarn", "pnpm"):
        return _node_package_manager(name, args), None
    if name == "sed":
        return _sed(args), None
    if is_python(name):
        return _python(name, args), None
    if name in SHELLS or name in INTERPRETERS:
        return Effect(PERSON, f"shell or interpreter evaluation ({name})"), None
    if name in RUNNERS:
        return Effect(PERSON, f"runs another program ({name})"), None
    program = PROGRAMS.get(name)
    if program is None:
        return Effect(
            PERSON, f"{name} is not a command the modes know, so its effect cannot be determined"
        ), None
    if option := _forbidden(args, program.forbidden):
        return Effect(PERSON, f"{name} {option} writes elsewhere or runs other programs"), program
    return Effect(program.level, f"{program.does} ({name})"), program


def _command_effect(command: Command, places: _Places) -> Effect:
    found = [Effect(HARMLESS, "does nothing")]
    for name, value in command.assignments:
        if name not in SAFE_VARIABLES:
            return Effect(PERSON, f"sets {name}, which can change what a program runs")
        if not value.static or value.tilde:
            return Effect(PERSON, f"{value.source} is known only at run time")
        if problem := places.problem(value.text):
            return Effect(PERSON, problem)
    if command.words:
        program = command.words[0]
        if not program.static or program.glob or program.tilde:
            return Effect(PERSON, f"the program {program.source} is known only at run time")
        path = program.text
        name = posixpath.basename(path)
        if "/" in path and not path.startswith(SYSTEM_BINS):
            return Effect(
                PERSON, f"runs a program or script by its path ({path}), whose effect cannot be determined"
            )
        args = command.words[1:]
        effect, entry = _program_effect(name, tuple(w.text for w in args))
        if effect.level == PERSON:
            return effect
        found.append(effect)
        judges_paths = entry is None or entry.paths
        for word in args:
            if not word.static:
                return Effect(PERSON, f"{word.source} is known only at run time")
            if word.glob and entry is not None and not entry.globs:
                return Effect(PERSON, f"a file name matching {word.source} could act as an option of {name}")
            if judges_paths and (problem := places.problem(word.text)):
                return Effect(PERSON, problem)
        if name == "cd":
            if len(args) != 1 or args[0].text == "-":
                return Effect(PERSON, "cd to a directory known only at run time (home or previous)")
            places.cd(args[0].text)
    for redirect in command.redirects:
        target = redirect.target
        if redirect.kind == "dup" or target is None:
            continue
        if not target.static:
            return Effect(PERSON, f"{target.source} is known only at run time")
        if redirect.kind in ("heredoc", "herestring"):
            continue
        if target.tilde:
            return Effect(PERSON, f"{target.source} is outside the workspace")
        writes = redirect.kind == "write"
        if problem := places.problem(target.text, writes=writes):
            return Effect(PERSON, problem)
        if writes and normal(target.text) not in DEVICES_ALLOWED:
            found.append(Effect(WORKSPACE, f"writes {target.text}"))
        elif not writes and normal(target.text) not in DEVICES_ALLOWED:
            found.append(Effect(READS, f"reads {target.text}"))
    return max(found, key=lambda e: e.level)


def effect_of(script: Script, *, cwd: str | None, workspace: str) -> Effect:
    """The most any part of `script` does, run in `cwd`: the first part that does it names why."""
    return max(part_effects(script, cwd=cwd, workspace=workspace), key=lambda e: e.level)


def part_effects(script: Script, *, cwd: str | None, workspace: str) -> list[Effect]:
    """What each of `script.commands` does, in order (a `cd` moves the parts after it). What the
    whole line does (a loop, `&`) counts for every part."""
    whole: Effect | None = None
    if script.unsupported:
        whole = Effect(PERSON, f"uses {script.unsupported[0]}, which the policy does not judge")
    elif script.background:
        whole = Effect(PERSON, "runs something in the background (&)")
    elif not script.commands:
        return [Effect(PERSON, "the command is empty")]
    if whole is not None:
        return [whole for _ in script.commands]
    places = _Places(cwd, workspace)
    found = []
    for command in script.commands:
        effect = _command_effect(command, places)
        if effect.level > HARMLESS and not places.cwds:
            effect = Effect(PERSON, f"runs outside the workspace (in {cwd or 'an unknown directory'})")
        found.append(effect)
    return found


def fed_evaluator(script: Script) -> str | None:
    """The shell or interpreter that runs code not written on the line, if any: fed by a pipe, a
    file, a here-document or `<(…)` (`curl … | sh`, `python - <<EOF`, `bash <(curl …)`), or handed
    code known only at run time (`bash -c "$(curl …)"`, `eval $x`); seen through sudo, env, xargs…"""
    for command in script.commands:
        if not command.words:
            continue
        first = command.words[0]
        if not first.static:
            if command.fed:
                return first.source
            continue
        runner = posixpath.basename(first.text)
        candidates = [(0, runner)] if runner not in RUNNERS or is_evaluator(runner) else []
        if runner in RUNNERS:
            candidates += [
                (k, posixpath.basename(part))
                for k, word in enumerate(command.words[1:], 1)
                for part in (word.text.split() or [word.text])
            ]
        for k, name in candidates:
            if is_evaluator(name) and (command.fed or not all(w.static for w in command.words[k + 1 :])):
                return name if k == 0 else f"{runner} … {name}"
        if runner in RUNNERS and command.fed and not all(w.static for w in command.words[1:]):
            return f"{runner} {' '.join(w.source for w in command.words[1:])}"
    return None


def outside_place(script: Script, *, cwd: str | None, workspace: str) -> str | None:
    """The first place outside the workspace `script` names (or could name: a word known only at
    run time), or its cwd when that is outside; None when everything it names is inside."""
    places = _Places(cwd, workspace)
    if not places.cwds:
        return f"runs outside the workspace (in {cwd or 'an unknown directory'})"
    for command in script.commands:
        words: list[Word] = [*command.words[1:], *(v for _, v in command.assignments)]
        words += [r.target for r in command.redirects if r.target and r.kind in ("read", "write")]
        if (
            command.words
            and "/" in command.words[0].text
            and not command.words[0].text.startswith(SYSTEM_BINS)
        ):
            words.append(command.words[0])
        for word in words:
            if not word.static or word.tilde:
                return f"{word.source} could name a place outside the workspace"
            if problem := places.problem(word.text):
                return problem
        if command.words and command.words[0].text == "cd" and len(command.words) == 2:
            places.cd(command.words[1].text)
    return None
