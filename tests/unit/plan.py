"""Plan one @deploy step against fake facts and list the commands each operation would run.

"Facts in, commands out": no host is contacted. ``Host.get_fact`` is patched to answer from
a dict keyed by fact class name; facts that take arguments are looked up by their main
argument (File by path, DockerImage by object_id, ...). A fact not in the dict returns the
fact's own default, as pyinfra does for a missing file or binary.

Execution is simulated so ``_if`` gates see the outcome of earlier operations: every
operation "succeeds" with the commands it generated.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any, Callable
from unittest import mock

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_host, ctx_state

from mlflow_stack.config import StackConfig

from .helpers import HOST_NAME

# Facts that take arguments: fact class name -> the keyword argument that selects the entry.
KEYED_FACTS = {
    "File": "path",
    "Directory": "path",
    "Link": "path",
    "Sha1File": "path",
    "Sha256File": "path",
    "Md5File": "path",
    "FileContents": "path",
    "FindFiles": "path",
    "DockerImage": "object_id",
    "EnvFileDigests": "path",
    "ComposeServices": "project",
    "Which": "command",
}


@dataclass
class Op:
    name: str
    commands: list[str]
    raw: list[Any]


@dataclass
class Plan:
    ops: list[Op]
    asked: list[tuple[str, Any]] = field(default_factory=list)
    # Every ask as (fact class, args, kwargs): what mlflow_stack.facts.prefetch must hold.
    calls: list[tuple[type, tuple, dict]] = field(default_factory=list)
    prefetched: list = field(default_factory=list)  # what the deploy asked facts/prefetch.py for
    uploads: dict[str, bytes] = field(default_factory=dict)

    @property
    def commands(self) -> list[str]:
        return [command for op in self.ops for command in op.commands]

    @property
    def changing(self) -> dict[str, list[str]]:
        """Operation name -> commands, for operations that would run something."""
        return {op.name: op.commands for op in self.ops if op.commands}

    def op(self, name: str) -> Op:
        matches = [op for op in self.ops if op.name == name]
        assert len(matches) == 1, f"no single operation named {name!r} in {[o.name for o in self.ops]}"
        return matches[0]

    def text(self) -> str:
        return "\n".join(self.commands)


def _source_bytes(src) -> bytes:
    if isinstance(src, (BytesIO, StringIO)):
        position = src.tell()
        src.seek(0)
        data = src.read()
        src.seek(position)
        return data.encode() if isinstance(data, str) else data
    return Path(src).read_bytes()


def render_command(command) -> str:
    if isinstance(command, StringCommand):
        return command.get_raw_value()  # unmasked: a hidden secret still counts as present
    if isinstance(command, FileUploadCommand):
        return f"upload {command.dest}"
    if isinstance(command, FunctionCommand):
        return f"call {getattr(command.function, '__name__', command.function)}"
    return repr(command)


def fake_get_fact(facts: dict, asked: list, calls: list | None = None) -> Callable:
    def get_fact(self, cls, *args, **kwargs):
        name = cls.__name__
        if calls is not None:
            calls.append((cls, args, kwargs))
        if name in KEYED_FACTS:
            key = kwargs.get(KEYED_FACTS[name], args[0] if args else None)
            asked.append((name, key))
            table = facts.get(name, {})
            if key in table:
                return copy.deepcopy(table[key])
            return cls().default()
        asked.append((name, None))
        if name in facts:
            return copy.deepcopy(facts[name])
        return cls().default()

    return get_fact


def plan(step: Callable, config: StackConfig, facts: dict, data: dict | None = None, **step_kwargs) -> Plan:
    """Plan `step(config, **step_kwargs)` on one host described by `facts`, then simulate a
    successful run; returns every operation with the commands it ran."""
    inventory = Inventory(([(config.inventory_name or HOST_NAME, dict(data or {}))], {}))
    state = State(inventory, Config())
    host = inventory.get_host(config.inventory_name or HOST_NAME)
    state.activate_host(host)

    asked: list = []
    result = Plan(ops=[], asked=asked)
    with mock.patch.object(Host, "get_fact", fake_get_fact(facts, asked, result.calls)), \
            mock.patch("mlflow_stack.facts.prefetch.prefetch", lambda planned: result.prefetched.extend(planned) or 0):
        add_deploy(state, step, config, **step_kwargs)
        state.is_executing = True
        with ctx_state.use(state), ctx_host.use(host):
            _execute(state, host, result)
    return result


def _execute(state: State, host: Host, result: Plan) -> None:
    if True:
        for op_hash in state.get_op_order():
            op_data = state.get_op_data_for_host(host, op_hash)
            raw = list(op_data.command_generator())
            op_data.operation_meta.set_complete(True, raw, CommandOutput([]))
            names = state.get_op_meta(op_hash).names
            result.ops.append(Op(name=", ".join(sorted(names)), commands=[render_command(c) for c in raw], raw=raw))
            for command in raw:
                if isinstance(command, FileUploadCommand):
                    result.uploads[command.dest] = _source_bytes(command.src)


def sha1(data: bytes | str) -> str:
    return hashlib.sha1(data.encode() if isinstance(data, str) else data).hexdigest()


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
