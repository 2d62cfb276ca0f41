"""The facts a deploy reads, asked in one round trip.

pyinfra 3 runs one remote command per fact, and each built-in operation asks its own facts
twice: once while the plan is made, again when it runs (a `files.put` asks for the file and its
checksum). A no-change rerun of this deploy was 121 commands at ~100 ms each. `prefetch` runs
the listed facts' own commands in one shell script, parses each output with the fact's own
`process`, and the host answers those facts from that table for as long as nothing has run on
it since: the table is dropped at the first command or upload of an operation, and from then
on pyinfra asks the host as it always does. A fact not listed, or whose command failed or whose
output did not parse, is always asked the usual way.
"""

from __future__ import annotations

import copy
import inspect
import shlex
from typing import Any, Iterable

from pyinfra import host, state
from pyinfra.api import StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
from pyinfra.api.facts import FactBase, ShortFactBase

MARKER = "@@mlflow-stack-fact"
# What pyinfra prints for a fact whose binary is missing (then the fact's default applies).
MISSING = "@@mlflow-stack-missing-command"

PlannedFact = tuple[type[FactBase], dict[str, Any]]


def _key(cls: type, args: tuple, kwargs: dict) -> tuple | None:
    """The fact and its arguments by name; None for what this table does not hold (global
    arguments such as _sudo, short facts)."""
    if issubclass(cls, ShortFactBase) or any(name.startswith("_") for name in kwargs):
        return None
    try:
        named = inspect.getcallargs(cls().command, *args, **kwargs) if callable(cls().command) else {}
    except TypeError:
        return None
    named.pop("self", None)
    return (cls, tuple(sorted((name, repr(value)) for name, value in named.items())))


def _command(fact: FactBase, kwargs: dict) -> str:
    """The fact's command as pyinfra runs it (some facts keep their arguments for `process`)."""
    command = fact.command(**kwargs) if callable(fact.command) else fact.command
    command = command.get_raw_value() if isinstance(command, StringCommand) else str(command)
    requires = fact.requires_command(**kwargs) if callable(fact.requires_command) else fact.requires_command
    if requires:
        command = (f"if command -v {shlex.quote(str(requires))} >/dev/null 2>&1; then ( {command} ); "
                   f"else echo {MISSING}; fi")
    return command


def batch_script(planned: list[PlannedFact]) -> str:
    """One shell script: each fact's command in a subshell between markers, with its exit status."""
    parts = []
    for index, (cls, kwargs) in enumerate(planned):
        parts.append(f"echo '{MARKER} {index} begin'; ( {_command(cls(), kwargs)} ) 2>/dev/null </dev/null; "
                     f"rc=$?; echo; echo \"{MARKER} {index} end $rc\"")
    return "\n".join(parts)


def parse_batch(planned: list[PlannedFact], lines: Iterable[str]) -> dict[tuple, Any]:
    """Fact key -> value, for each fact whose command succeeded and whose output parsed."""
    sections: dict[int, list[str]] = {}
    statuses: dict[int, int] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith(MARKER + " "):
            _, index, what, *rest = line.split()
            if what == "begin":
                current = sections.setdefault(int(index), [])
            else:
                statuses[int(index)] = int(rest[0])
                current = None
        elif current is not None:
            current.append(line)
    table = {}
    for index, (cls, kwargs) in enumerate(planned):
        if statuses.get(index) != 0:
            continue
        output = sections[index]
        if output and output[-1] == "":  # the `echo` that ends a last line without a newline
            output = output[:-1]
        fact = cls()
        _command(fact, kwargs)
        try:
            if output == [MISSING]:
                value = fact.default()
            else:
                value = fact.process(output) if output else fact.default()
        except Exception:  # noqa: BLE001 - pyinfra would report it when the fact is asked: let it
            continue
        table[_key(cls, (), kwargs)] = value
    return table


def prefetch(planned: list[PlannedFact]) -> int:
    """Ask the listed facts of the current host in one command; later asks for them are
    answered from it until an operation runs something there. Returns how many are held."""
    if not planned:
        return 0
    real_host, real_state = host._get_module(), state._get_module()  # behind pyinfra's context proxies
    global_arguments, _ = pop_global_arguments(real_state, real_host, {})
    connector_arguments = {key: value for key, value in global_arguments.items() if key in CONNECTOR_ARGUMENT_KEYS}
    if not real_host.connected:
        real_host.connect(reason="to load the deploy's facts", raise_exceptions=True)
    ok, output = real_host.run_shell_command(StringCommand(batch_script(planned)),
                                             print_output=real_state.print_fact_output,
                                             print_input=real_state.print_fact_input, **connector_arguments)
    table = parse_batch(planned, output.stdout_lines) if ok else {}
    asked_directly, run_directly, put_directly = real_host.get_fact, real_host.run_shell_command, real_host.put_file
    reading = []  # non-empty while a fact not in the table is asked

    def get_fact(cls, *args, **kwargs):
        key = _key(cls, args, kwargs)
        if key in table:
            return copy.deepcopy(table[key])
        reading.append(cls)
        try:
            return asked_directly(cls, *args, **kwargs)
        finally:
            reading.pop()

    def run_shell_command(*args, **kwargs):
        if not reading:  # an operation's command: the host may differ from the table now
            table.clear()
        return run_directly(*args, **kwargs)

    def put_file(*args, **kwargs):
        table.clear()
        return put_directly(*args, **kwargs)

    real_host.get_fact, real_host.run_shell_command, real_host.put_file = get_fact, run_shell_command, put_file
    return len(table)
