"""Start, health-check and stop a local ``vllm serve`` process (tests, benchmarks, laptops).

The server always binds 127.0.0.1. The vLLM executable may live in another virtual environment
(on CPU machines vLLM cannot share the project's environment), given as ``vllm_bin``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServer:
    """One ``vllm serve`` child process with the flags that matter on CPU and GPU."""

    def __init__(
        self,
        model_dir: str | Path,
        vllm_bin: str | Path = "vllm",
        served_name: str = "local",
        port: int | None = None,
        max_model_len: int = 2048,
        max_num_seqs: int = 64,
        images_per_prompt: int = 3,
        cpu: bool = True,
        log_path: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """Describe the server (nothing starts until :meth:`start`)."""
        self.model_dir, self.vllm_bin, self.served_name = str(model_dir), str(vllm_bin), served_name
        self.port = port or free_port()
        self.args = [
            self.vllm_bin,
            "serve",
            self.model_dir,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--served-model-name",
            served_name,
            "--max-model-len",
            str(max_model_len),
            "--max-num-seqs",
            str(max_num_seqs),
            "--limit-mm-per-prompt",
            json.dumps({"image": images_per_prompt, "video": 0}),
            # Without it a weak model can emit whitespace until max_tokens.
            "--structured-outputs-config",
            json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        ]
        if cpu:  # the CPU build needs an explicit KV cache size; compilation gains nothing small
            self.args += ["--kv-cache-memory-bytes", str(256 * 1024 * 1024), "--enforce-eager"]
        self.args += list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 240.0) -> VllmServer:
        """Launch and wait until ``/health`` answers 200 (raises with the log tail if not)."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        self._log = self.log_path.open("ab") if self.log_path else None
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # so stop() can signal the whole process group
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if self.healthy():
                return self
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vllm serve not healthy after {timeout_s:.0f} s: {self.log_tail()}")

    def healthy(self) -> bool:
        """Whether ``/health`` answers 200 right now."""
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        """Signal the server's process group and wait for it (SIGKILL after ``timeout_s``)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log:
            self._log.close()
            self._log = None
        self.proc = None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server log (for error messages)."""
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-chars:]
        return "(no log file)"

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
