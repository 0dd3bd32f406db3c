"""The Codex side of work-ally: the pinned `codex app-server` child and the API activities call.

binary.py finds the native binary; process.py runs one child; rpc.py speaks its JSON-RPC;
runtime.py supervises the child and exposes threads and turns; protocol.py is generated
(dev/regen_protocol). Import from the submodules: this package imports nothing, so `ally doctor`
can find the binary without loading the protocol models.
"""
