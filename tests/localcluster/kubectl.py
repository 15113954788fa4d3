"""Runs the kubectl from the virtualenv (the PyPI wheel) against a given kubeconfig."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries the command and its stderr."""

    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )


def find_kubectl() -> Path:
    """`kubectl` beside the running Python (the venv's wheel), else the first on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found beside the Python interpreter nor on PATH")
    return Path(found)


@dataclass(frozen=True)
class Kubectl:
    """kubectl bound to one kubeconfig."""

    kubeconfig: Path
    binary: Path

    @classmethod
    def for_kubeconfig(cls, kubeconfig: Path) -> Kubectl:
        return cls(kubeconfig=kubeconfig, binary=find_kubectl())

    def __call__(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,  # noqa: A002
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise KubectlError(list(args), result)
        return result
