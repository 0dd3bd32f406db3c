"""Base classes of every generated model in `ally/codex/protocol.py` (see dev/regen_protocol).

The generated module holds ~2,000 models, of which the runtime validates about ten. Pydantic builds
a model's validator when its class is created unless `defer_build` is set; deferring moves that
cost from worker start-up (import of protocol.py: ~1.5 s -> ~0.7 s on 2 vCPU) to the first
validation of each model we actually use (a few ms, once).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, RootModel

RootT = TypeVar("RootT")


class ProtocolModel(BaseModel):
    model_config = ConfigDict(defer_build=True, populate_by_name=True)


class ProtocolRootModel(RootModel[RootT]):
    model_config = ConfigDict(defer_build=True)
