"""`aqueduct-grpc serve` as a real child process, for the tests that run it as a user would."""

from __future__ import annotations

import os
import pathlib
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

import pytest

__all__ = ["Served"]

SILENCE_SECONDS = 60


class Served:
    """A running `serve` process and what it printed."""

    def __init__(
        self,
        data_dir: pathlib.Path,
        *options: str,
        http_port: int = 0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Starts `serve` on gRPC port 0; returns at once (see `wait_for`).

        Args:
            data_dir: its `--data-dir` (journal, and the embedded database by default).
            options: further command-line options, e.g. `--config FILE`.
            http_port: its HTTP door's port (0: one the OS picks).
            environ: variables added to this process's environment.
        """
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aqueduct_grpc",
                "serve",
                "--grpc-port",
                "0",
                "--http-port",
                str(http_port),
                "--data-dir",
                str(data_dir),
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(environ or {}), "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first printed line matching `pattern` (fails after 60 s of silence)."""
        while True:
            for line in self.output:
                found = re.search(pattern, line)
                if found:
                    return found
            try:
                self.output.append(self.lines.get(timeout=SILENCE_SECONDS))
            except queue.Empty:
                pytest.fail(f"serve never printed {pattern!r}; it printed:\n{''.join(self.output)}")

    def stop(self) -> int:
        """Stops it with SIGTERM (a graceful stop); returns its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def close(self) -> None:
        """Kills the process if it still runs and releases its pipe."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
