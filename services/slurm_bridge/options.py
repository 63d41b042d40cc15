"""SLURM options from requests: an allow-list of option names, each with a strict value pattern.

A batch request may set SLURM options for its jobs (``batch_options``:
``slurm_options`` for both jobs, ``array_options`` / ``collect_options`` for
one, and ``array_header`` / ``collect_header`` lines ``#SBATCH --name=value``).
They end up as ``#SBATCH`` lines of job scripts that the bridge writes, so a
request must not be able to add a flag (``--wrap``, ``--output``), a second
line, or a shell word. The original YAPTIDE deleted unexpected characters and
still let spaces through (so ``"1 --wrap=..."`` became an extra flag); here
every name must be on the list below and its whole value must match that
name's pattern, or the request is refused with a message that says which
field and why. Nothing is ever rewritten into something else.

The API checks requests with these functions before anything is written to the
log (400 for a refusal), and the bridge checks them again before it submits
(defence in depth: the log may hold events from other producers).

Names and formats are those of sbatch(1), SLURM 22.05.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from services.slurm_bridge.errors import OptionRefused

_NAME = r"[A-Za-z0-9_.-]{1,64}"
_MEMORY = r"[0-9]{1,9}[KMGT]?"
_COUNT = r"[1-9][0-9]{0,4}"
_DURATION = (r"(?:[0-9]{1,7}|[0-9]{1,7}:[0-9]{1,2}|[0-9]{1,5}:[0-9]{1,2}:[0-9]{1,2}"
             r"|[0-9]{1,3}-[0-9]{1,2}(?::[0-9]{1,2}(?::[0-9]{1,2})?)?|UNLIMITED|INFINITE)")
_MAIL_TYPE = (r"(?:NONE|BEGIN|END|FAIL|REQUEUE|ALL|INVALID_DEPEND|STAGE_OUT|ARRAY_TASKS"
              r"|TIME_LIMIT(?:_90|_80|_50)?)")
_FLAG = ""

#: Option name -> the pattern its whole value must match ("" alone: a flag without value).
ALLOWED: dict[str, str] = {
    "account": _NAME,
    "partition": rf"{_NAME}(?:,{_NAME}){{0,15}}",
    "qos": _NAME,
    "reservation": _NAME,
    "time": _DURATION,
    "time-min": _DURATION,
    "mem": _MEMORY,
    "mem-per-cpu": _MEMORY,
    "mem-per-gpu": _MEMORY,
    "tmp": _MEMORY,
    "cpus-per-task": _COUNT,
    "cores-per-socket": _COUNT,
    "sockets-per-node": _COUNT,
    "threads-per-core": _COUNT,
    "gpus": rf"(?:{_NAME}:)?{_COUNT}",
    "gpus-per-task": rf"(?:{_NAME}:)?{_COUNT}",
    "gres": r"[A-Za-z0-9_.:,-]{1,200}",
    "constraint": r"[A-Za-z0-9_.,&|-]{1,200}",
    "licenses": r"[A-Za-z0-9_.:,@-]{1,200}",
    "nodelist": r"[A-Za-z0-9_.,\[\]-]{1,500}",
    "exclude": r"[A-Za-z0-9_.,\[\]-]{1,500}",
    "exclusive": r"(?:|user|mcs)",
    "hint": r"(?:compute_bound|memory_bound|multithread|nomultithread)",
    "nice": r"[0-9]{1,5}",
    "signal": r"(?:[BR]:)?[A-Z0-9]{1,10}(?:@[0-9]{1,5})?",
    "mail-type": rf"{_MAIL_TYPE}(?:,{_MAIL_TYPE}){{0,10}}",
    "mail-user": r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}",
    "comment": r"[A-Za-z0-9_.,:@+-]{1,200}",
}
_PATTERNS = {name: re.compile(pattern) for name, pattern in ALLOWED.items()}

#: Options the bridge sets itself (or that would break tracking): named so the refusal
#: says why, not just "not allowed".
BRIDGE_OWNED = frozenset({
    "array", "chdir", "output", "error", "input", "open-mode", "job-name", "dependency",
    "wrap", "export", "export-file", "parsable", "hold", "begin", "deadline", "requeue",
    "no-requeue", "clusters", "wait", "test-only", "kill-on-invalid-dep", "uid", "gid",
    "get-user-env", "propagate", "container", "batch", "ntasks", "nodes",
})
_HEADER = re.compile(r"#SBATCH\s+--([A-Za-z][A-Za-z0-9-]{0,63})(?:=(\S*))?")
_OPERATOR_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
_OPERATOR_VALUE = re.compile(r"[^\s'\"`$\\;]{0,500}")

SlurmOptions = dict[str, str]


def check_option(field: str, name: object, value: object) -> tuple[str, str]:
    """One option from a request as ``(name, value)`` (a flag has the value "").

    Raises:
        OptionRefused: the name is not on the allow-list, or the value does not match it.
    """
    if not isinstance(name, str) or not name:
        raise OptionRefused(f"{field}: option names must be non-empty strings")
    shown = name[:64]
    if name in BRIDGE_OWNED:
        raise OptionRefused(f"{field}: SLURM option {shown!r} is set by the bridge itself "
                            "and cannot be given")
    pattern = _PATTERNS.get(name)
    if pattern is None:
        raise OptionRefused(f"{field}: SLURM option {shown!r} is not allowed; allowed: "
                            f"{', '.join(sorted(ALLOWED))}")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise OptionRefused(f"{field}: value {str(value)[:80]!r} is not valid for SLURM "
                            f"option {shown!r} (expected {ALLOWED[name]!r})")
    return name, value


def check_options(field: str, options: object) -> SlurmOptions:
    """A request's options object (name -> value), each checked by :func:`check_option`.

    Raises:
        OptionRefused: not an object, or an entry is refused.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise OptionRefused(f"{field} must be an object mapping SLURM option names to values")
    return dict(check_option(field, name, value) for name, value in options.items())


def check_header(field: str, header: object) -> SlurmOptions:
    """A request's header text: lines ``#SBATCH --name=value`` (or ``--name`` for a flag).

    Raises:
        OptionRefused: not a string, a line of another form, or an option refused.
    """
    if header is None or header == "":
        return {}
    if not isinstance(header, str):
        raise OptionRefused(f"{field} must be a string of '#SBATCH --name=value' lines")
    options: SlurmOptions = {}
    for line in header.splitlines():
        text = line.strip()
        if not text:
            continue
        match = _HEADER.fullmatch(text)
        if match is None:
            raise OptionRefused(f"{field}: lines must look like '#SBATCH --name=value', "
                                f"got {text[:80]!r}")
        name, value = check_option(field, match.group(1), match.group(2) or "")
        options[name] = value
    return options


def check_operator_options(cluster: str, field: str, options: Mapping[str, str]) -> None:
    """Options from the cluster configuration: trusted, so only their shape is checked.

    Raises:
        ValueError: a name that is not an sbatch long option, one the bridge sets itself,
            or a value with white space, quotes or shell characters.
    """
    for name, value in options.items():
        if not _OPERATOR_NAME.fullmatch(name) or name in BRIDGE_OWNED:
            raise ValueError(f"cluster {cluster!r}: {field} option {name!r} cannot be used "
                             "(not an sbatch long option, or set by the bridge itself)")
        if not _OPERATOR_VALUE.fullmatch(value):
            raise ValueError(f"cluster {cluster!r}: {field} option {name!r} has a value with "
                             "white space, quotes or shell characters")


def merged(*layers: Mapping[str, str]) -> SlurmOptions:
    """Options from several layers, later ones winning (defaults, both jobs, one job)."""
    out: SlurmOptions = {}
    for layer in layers:
        out.update(layer)
    return out


def sbatch_lines(options: Mapping[str, str]) -> list[str]:
    """The ``#SBATCH`` lines of checked options, in a stable order."""
    return [f"#SBATCH --{name}" + (f"={value}" if value != _FLAG else "")
            for name, value in sorted(options.items())]


def request_options(batch_options: Mapping[str, object]) -> tuple[SlurmOptions, SlurmOptions]:
    """The array job's and the collect job's options from a request's ``batch_options``.

    Raises:
        OptionRefused: any field holds something the allow-list refuses.
    """
    both = check_options("batch_options.slurm_options", batch_options.get("slurm_options"))
    array = merged(
        both,
        check_options("batch_options.array_options", batch_options.get("array_options")),
        check_header("batch_options.array_header", batch_options.get("array_header")))
    collect = merged(
        both,
        check_options("batch_options.collect_options", batch_options.get("collect_options")),
        check_header("batch_options.collect_header", batch_options.get("collect_header")))
    return array, collect

