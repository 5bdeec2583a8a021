"""Write the ``ketch-runc`` command as a script that starts faster than pip's.

Callers such as containerd's shim and dockerd run ``ketch-runc`` several times per
container, so the interpreter's start-up is paid on every verb. The console script that
pip writes runs ``site``, which reads every ``.pth`` file of the environment, and imports
``re`` before it calls ketch. The runtime needs neither: it imports only the standard
library and ketch. The script written here runs the environment's interpreter with
``-I -S`` (isolated mode, no ``site``), puts the directory that contains the ``ketch``
package first on ``sys.path`` and calls :func:`ketch.runtime.cli.main`.

Isolated mode also keeps the current directory, the script's directory and the
``PYTHON*`` environment variables out of the import path, so a file in a bundle cannot
stand in for a module of the runtime.

After the verb, the script flushes stdout and stderr and ends with ``posix._exit`` (the
function :mod:`os` re-exports as ``os._exit``), which skips the interpreter's teardown
(freeing every module), the larger the more ``create`` imports. The script imports
neither :mod:`os` nor anything else that ``start`` and ``delete`` do not need, and it
turns off the cyclic garbage collector for the short verbs.

If ``ketch`` cannot be imported from that directory (it moved since the script was
written), the script runs ``site`` after all and imports ``ketch`` from wherever the
environment has it, as pip's script would.

Usage, after ``pip install`` (which writes its own script at the same path)::

    python -m ketch.runtime.launcher .venv/bin/ketch-runc

The script names the interpreter (``sys.executable`` of the command above) and the
package directory by absolute path, so it must be written again if either moves.

``--cli`` writes the same kind of script for the ``ketch`` command, whose modules also
import only the standard library and ketch: every ``ketch ps`` or ``ketch run`` saves the
same milliseconds. That script ends with a normal exit instead, because the CLI may still
have threads copying a container's output when its main function returns::

    python -m ketch.runtime.launcher --cli .venv/bin/ketch
"""

from __future__ import annotations

import os
import sys

RUNTIME_ENTRY = "ketch.runtime.cli"
CLI_ENTRY = "ketch.cli.main"

_TEMPLATE = """#!{interpreter} -IS
# Written by `python -m ketch.runtime.launcher`. -I -S skips site and its .pth files, which
# this command does not need, to save milliseconds on every call.
import sys
{prelude}
sys.path.insert(0, {package_parent!r})
try:
    from {entry} import main
except ImportError:
    # ketch is no longer in that directory, so let site find it, as pip's script does.
    del sys.path[0]
    import site

    site.main()
    from {entry} import main
"""

_NORMAL_EXIT = """sys.exit(main())
"""

_RUNTIME_PRELUDE = """import gc

# The cyclic garbage collector ran 5 times (0.5 ms) while create loaded its modules, and
# create, start, state, kill and delete end within milliseconds. ketch.runtime.cli turns
# it back on for the other verbs, such as run and exec, which last as long as a container.
gc.disable()
"""

_FAST_EXIT = """import posix

status = main()
# posix._exit skips the interpreter's teardown, which takes milliseconds once create's modules
# are loaded. ketch-runc starts no threads and registers no exit handlers of its own, and
# its log handlers flush every record, so only stdout and stderr need flushing. posix is
# the module os re-exports it from, and importing os would cost every call 1 to 2 ms.
try:
    sys.stdout.flush()
    sys.stderr.flush()
except OSError:
    status = 120  # the status Python's own exit returns when flushing stdout fails
posix._exit(status)
"""


def launcher_text(interpreter: str, package_parent: str, entry: str = RUNTIME_ENTRY) -> str:
    """Return the script that runs ``interpreter`` with ketch imported from ``package_parent``
    and calls ``main`` of the module ``entry``."""
    runtime = entry == RUNTIME_ENTRY
    head = _TEMPLATE.format(
        interpreter=interpreter,
        package_parent=package_parent,
        entry=entry,
        prelude=_RUNTIME_PRELUDE if runtime else "",
    )
    return head + (_FAST_EXIT if runtime else _NORMAL_EXIT)


def package_parent() -> str:
    """Return the directory that contains this ``ketch`` package."""
    import ketch

    return os.path.dirname(os.path.dirname(os.path.abspath(ketch.__file__)))


def write_launcher(path: str, interpreter: str | None = None, entry: str = RUNTIME_ENTRY) -> None:
    """Replace ``path`` atomically with the script for ``interpreter`` (default: this one)."""
    if interpreter is None:
        interpreter = sys.executable
    if not os.path.isabs(interpreter) or any(char.isspace() for char in interpreter):
        # The kernel splits a #! line at the first blank and allows no relative lookup.
        raise ValueError(
            f"invalid interpreter {interpreter!r}: expected an absolute path without blanks"
        )
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(launcher_text(interpreter, package_parent(), entry))
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    entry = RUNTIME_ENTRY
    if arguments[:1] == ["--cli"]:
        entry, arguments = CLI_ENTRY, arguments[1:]
    if len(arguments) != 1:
        print("usage: python -m ketch.runtime.launcher [--cli] SCRIPT_PATH", file=sys.stderr)
        return 2
    try:
        write_launcher(arguments[0], entry=entry)
    except (OSError, ValueError) as error:
        print(f"ketch.runtime.launcher: cannot write {arguments[0]}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
