"""The driver JVM's class-data archive: named by the JDK, pyspark and the packages, passed to
the driver only once it exists (a missing archive would turn off the JDK's own sharing too),
its messages kept off stdout."""

import shutil
from pathlib import Path

import pytest
import yaml

from coldtier import cds

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    shutil.copy(ROOT / "conf" / "dependencies.yaml", tmp_path / "conf" / "dependencies.yaml")
    return tmp_path


def test_an_untrained_machine_passes_no_option(root: Path) -> None:
    path = cds.archive_path(root)
    assert path is not None and path.parent == root / "build" / "jvm" and path.suffix == ".jsa"
    assert cds.java_options(root) == ""


def test_a_trained_archive_is_mapped_and_the_jvm_says_nothing_of_it(root: Path) -> None:
    path = cds.archive_path(root)
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    opts = cds.java_options(root).split()
    assert opts[0] == f"-XX:SharedArchiveFile={path}"
    # the JVM's unified-logging warnings go to stdout, where the progress lines are
    assert "-Xlog:cds=off" in opts and "-Xlog:cds+dynamic=off" in opts


def test_other_packages_name_another_archive(root: Path) -> None:
    before = cds.archive_path(root)
    doc = yaml.safe_load((root / "conf" / "dependencies.yaml").read_text())
    first = next(iter(doc["packages"]))
    doc["packages"][first] = doc["packages"][first] + "-other"
    (root / "conf" / "dependencies.yaml").write_text(yaml.safe_dump(doc))
    assert cds.archive_path(root) not in (None, before)


def test_bootstrap_asks_before_it_trains(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLDTIER_HOME", str(root))
    assert cds.main(["--if-missing", "--check"]) == 1  # bootstrap then trains
    path = cds.archive_path(root)
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert cds.main(["--if-missing", "--check"]) == 0
    assert cds.main(["--if-missing"]) == 0  # nothing to do: no training run
