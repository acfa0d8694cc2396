"""The command ends as soon as its work is done: no teardown of torch & co. module by module (it held
the shell 2-9 s after the last line), yet atexit handlers, worker threads and the streams get their turn."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

SCRIPT = textwrap.dedent("""
    import atexit, sys, threading, time
    from pathlib import Path

    class Teardown:
        def __del__(self):
            print("module teardown ran", flush=True)

    keep = Teardown()  # a module global: only the interpreter's teardown deletes it
    atexit.register(lambda: print("atexit ran", flush=True))

    marker = Path(sys.argv[1])

    def late_write():
        time.sleep(0.3)
        marker.write_text("written")

    threading.Thread(target=late_write).start()
    sys.argv = ["video2dream", "extract", sys.argv[2], "-o", sys.argv[3]]
    from video2dream.cli import main
    main()
""")


def test_the_process_skips_module_teardown_but_not_atexit_or_threads(tmp_path: Path) -> None:
    marker = tmp_path / "thread.txt"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(marker), str(tmp_path / "missing.mp4"),
                           str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "video file not found" in proc.stderr and "Traceback" not in proc.stderr
    assert "atexit ran" in proc.stdout
    assert marker.read_text() == "written"  # a non-daemon thread finished before the exit
    assert "module teardown ran" not in proc.stdout  # the slow part is skipped


def test_in_process_callers_get_system_exit(tmp_path: Path) -> None:
    from conftest import cli

    assert cli("extract", tmp_path / "missing.mp4", "-o", tmp_path / "run") == 1
