"""neural-tangents' own environment, ``.peer-venv/`` (standard library only: CI creates it
with the system Python while the project itself installs).

    python benchmarks/peer_env.py                                         (``make peer``)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / ".peer-venv"
PEER_PINS = ["neural-tangents==0.6.5", "jax==0.4.23", "jaxlib==0.4.23", "numpy<2", "scipy<1.13"]


def peer_python() -> Path:
    """The peer environment's interpreter, creating the environment on first use."""
    py = PEER / "bin" / "python"
    stamp = PEER / ".installed"
    if not stamp.exists():
        print(
            f"creating the peer environment in {PEER.name}/ ({' '.join(PEER_PINS)})",
            file=sys.stderr,
        )
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PEER_PINS],
            check=True,
        )
        stamp.write_text(" ".join(PEER_PINS))
    return py


if __name__ == "__main__":
    print(f"peer environment ready: {peer_python()}")
