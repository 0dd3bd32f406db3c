"""lark-oapi, loaded lean: the SDK's own classes, without the thousands of modules work-ally never calls.

Why (lark-oapi 1.7.5, pinned <1.8; docs/operations.md, "bench.footprint"): `import lark_oapi` imports
`lark.Client`, which imports every Open API service, and each package under `lark_oapi.api`
(`<service>`, `<service>.<version>`, their `model` and `resource`) imports everything below it in its
`__init__`: about 10,600 modules, 170 MiB and 3 s, where work-ally calls `im.v1` and `contact.v3`
(`application.v6` in `ally doctor`) besides the core, the event dispatcher and the long connection.
Even `import lark_oapi.ws.client` runs those `__init__`s on the way.

So, before any lark-oapi import (`ally/channels/feishu/__init__.py` imports this module first), an
import hook loads `lark_oapi`, every package under `lark_oapi.api` and the vendored protobuf's
`google` namespace package (its `__init__` only declares the namespace, importing `pkg_resources`)
as *shells*: the real package, with its real `__path__` and `__file__`, whose `__init__` has not run
yet. Importing a module inside one (`lark_oapi.api.im.v1.resource.message`) loads that module and what
it imports, nothing else. The first time anyone asks a shell for a name it does not have
(`lark_oapi.Client`, `from lark_oapi.api.im.v1 import X`, `from … import *`), the shell runs its real
`__init__` and answers: every way of using the SDK keeps working, only the unused parts stay unloaded.
Everything the code calls is the SDK's own code; only the order of the package `__init__`s differs.

work-ally imports the SDK's modules by their full path (`lark_oapi.api.im.v1.resource.message`, not
`lark_oapi.api.im.v1`), builds an SDK `Config` as `lark.Client.builder()` would (`sdk_config`) and
calls the SDK's resource classes with it; raw calls go through `send`, `lark.Client.request`'s body.
tests/test_feishu_sdk_loading.py fails if a lark-oapi version changes any of this.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
import urllib.parse
from collections.abc import Sequence
from typing import Any

# The lark-oapi this was checked against (the shells' `__init__`s, `sdk_config`, `send`); the test
# fails on another version until it is checked again.
CHECKED_WITH = "1.7.5"
# The packages loaded as shells: their `__init__` only gathers what is below them.
SHELL_ROOT = "lark_oapi"
SHELL_TREE = "lark_oapi.api"
SHELL_NAMESPACE = "lark_oapi.ws.pb.google"


def is_shell_package(name: str) -> bool:
    return name in (SHELL_ROOT, SHELL_TREE, SHELL_NAMESPACE) or name.startswith(SHELL_TREE + ".")


class _ShellLoader:
    """Creates the package as its own loader would, and defers running its `__init__`."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        created: types.ModuleType | None = self.real.create_module(spec)
        return created

    def exec_module(self, module: types.ModuleType) -> None:
        real = self.real
        lock = threading.RLock()
        completed = False

        def __getattr__(name: str) -> Any:
            nonlocal completed
            with lock:
                if not completed:
                    completed = True
                    module.__dict__["__ally_completed__"] = True
                    real.exec_module(module)  # runs the real `__init__` in this module's namespace
            try:
                return module.__dict__[name]
            except KeyError:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None

        module.__dict__["__getattr__"] = __getattr__
        module.__dict__["__ally_completed__"] = False

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: the real loader's
        return getattr(self.real, name)


class _ShellFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not is_shell_package(fullname):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec
        spec.loader = _ShellLoader(spec.loader)  # type: ignore[assignment]
        return spec


def install() -> None:
    """Idempotent; does nothing once lark-oapi was imported the ordinary way (a test's fake)."""
    if SHELL_ROOT in sys.modules or any(isinstance(f, _ShellFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _ShellFinder())


def completed_shells() -> list[str]:
    """The shell packages whose real `__init__` ran (what a lean process should keep empty)."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if is_shell_package(name)
        and "__path__" in vars(module)
        and vars(module).get("__ally_completed__", True)
    )


install()

# httpx, which the SDK's transport imports for its async calls (work-ally makes none), imports its
# command-line client when click, rich and pygments are installed, as typer installs them: ~4 MiB of
# modules nothing here runs. With that module marked absent httpx defines a stub `main` instead, as
# it does where they are not installed.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None = absent (importlib)

# The SDK's modules, by full path, once the hook is in place.
from lark_oapi.core.const import APPLICATION_JSON, CONTENT_TYPE, UTF_8  # noqa: E402
from lark_oapi.core.enum import LogLevel  # noqa: E402
from lark_oapi.core.http import Transport  # noqa: E402
from lark_oapi.core.json import JSON  # noqa: E402
from lark_oapi.core.log import logger  # noqa: E402
from lark_oapi.core.model import BaseResponse, Config, RequestOption  # noqa: E402
from lark_oapi.core.token import verify  # noqa: E402


def sdk_config(
    app_id: str, app_secret: str, *, domain: str, timeout_s: float, log_level: Any = LogLevel.WARNING
) -> Any:
    """The `Config` `lark.Client.builder()…build()` makes, which the SDK's resources take: the same
    domain rule (https, or http to this machine only, so the secret never travels in clear) and the
    SDK logger's level set from it."""
    _check_domain(domain)
    config = Config()
    config.app_id, config.app_secret, config.domain, config.timeout = app_id, app_secret, domain, timeout_s
    config.log_level = log_level
    logger.setLevel(int(log_level.value))
    return config


def send(config: Any, request: Any) -> Any:
    """`lark.Client.request` (sync): a raw `BaseRequest` with the token it asks for; JSON answers
    are read into a `BaseResponse`, others are a success when 2xx. `.raw` keeps the HTTP response."""
    option = RequestOption()
    verify(config, request, option)
    raw = Transport.execute(config, request, option)
    response = BaseResponse()
    content_type = raw.headers.get(CONTENT_TYPE)
    if content_type is not None and content_type.startswith(APPLICATION_JSON):
        response = JSON.unmarshal(str(raw.content, UTF_8), BaseResponse)
    elif 200 <= raw.status_code < 300:
        response.code = 0
    response.raw = raw
    return response


def _check_domain(domain: str) -> None:
    parsed = urllib.parse.urlsplit(domain)
    local = (parsed.hostname or "").lower() in ("127.0.0.1", "localhost", "::1")
    if not (parsed.scheme == "https" or (parsed.scheme == "http" and local)) or not parsed.netloc:
        raise ValueError(f"the Feishu domain must be an https URL (got {domain!r})")
    if "@" in parsed.netloc or parsed.path or parsed.query or parsed.fragment:
        raise ValueError(
            f"the Feishu domain must be scheme and host only, like https://open.feishu.cn (got {domain!r})"
        )
