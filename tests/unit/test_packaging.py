"""coldtier installs like a tool: `pip install .` builds a wheel whose `coldtier` command runs
in a fresh environment, and the venv `make` builds has the command too."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile

import coldtier
from helpers import ROOT


def test_the_wheel_gives_a_coldtier_command(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("coldtier-*.whl")
    assert wheel.name.startswith(f"coldtier-{coldtier.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {"coldtier/cli.py", "coldtier/submit.py", "coldtier/validate.py", "chembed/server.py"} <= names
    assert "coldtier = coldtier.cli:main" in entry_points
    # a fresh environment: the wheel alone (its dependencies from this venv's site-packages)
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = subprocess.run([sys.executable, "-c", "import yaml, os; print(os.path.dirname(os.path.dirname("
                           "yaml.__file__)))"], capture_output=True, text=True, check=True).stdout.strip()
    target = env_dir / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                                str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    version = subprocess.run([str(target / "bin" / "coldtier"), "--version"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{target}:{site}"}, timeout=60,
                             cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"coldtier {coldtier.__version__}", version


def test_the_venv_has_the_command():
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "coldtier"), "--version"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60, cwd="/")
    assert done.returncode == 0 and done.stdout.strip() == f"coldtier {coldtier.__version__}", done
