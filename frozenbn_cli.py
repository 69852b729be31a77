"""The `frozenbn` command: runs `frozenbn.cli` without the backend's log lines.

This module sits outside the `frozenbn` package on purpose: importing the
package imports Keras and its backend, and TensorFlow's C++ runtime writes
lines such as "oneDNN custom operations are on" or "Could not find cuda
drivers" straight to the process's file descriptor 2, at import and later,
below any Python logging setting. The command prints only its own output,
so before the package is imported, Python's `sys.stderr` is moved to a
duplicate of the real stderr and descriptor 2 is pointed at a temporary
file that nobody reads. If importing the package fails, what the runtime
wrote is shown. Set `FROZENBN_DEBUG=1` to see everything (and tracebacks).
"""

import os
import sys
import tempfile


def main() -> int:
    """Runs `frozenbn.cli.main` with native log lines kept off the terminal."""
    if os.environ.get("FROZENBN_DEBUG"):
        from frozenbn.cli import main as cli_main

        return cli_main()
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(2), "w", buffering=1)
    with tempfile.TemporaryFile(mode="w+b") as native:
        os.dup2(native.fileno(), 2)
        try:
            from frozenbn.cli import main as cli_main
        except BaseException:
            native.seek(0)
            sys.stderr.write(native.read().decode(errors="replace"))
            raise
        return cli_main()


if __name__ == "__main__":
    sys.exit(main())
