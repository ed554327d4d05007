"""The safe writer: atomic, refuses to overwrite, leaves nothing behind on failure."""

import os
import tempfile

import pytest

from medm2g_core.atomic import atomic_dir, atomic_path, atomic_write, check_folder_writable, write_text
from medm2g_core.errors import InputError, OutputError, OutputExistsError


def test_write_then_refuse_then_overwrite(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(OutputExistsError, match="already exists; ask for overwrite to replace it") as refused:
        write_text(target, "second")
    assert refused.value.option == "overwrite" and "--" not in str(refused.value)
    assert target.read_text() == "first"
    write_text(target, "third", overwrite=True)
    assert target.read_text() == "third"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_exception_leaves_no_partial_file(tmp_path):
    target = tmp_path / "volume.nii.gz"
    with pytest.raises(ZeroDivisionError), atomic_write(target) as handle:
        handle.write(b"half a file")
        1 / 0  # noqa: B018
    assert os.listdir(tmp_path) == []


def test_exception_keeps_the_old_file_intact(tmp_path):
    target = tmp_path / "report.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_write(target, overwrite=True, mode="w") as handle:
        handle.write("new but broken")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["report.txt"]


def test_atomic_path_keeps_the_full_suffix(tmp_path):
    with atomic_path(tmp_path / "ct.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        assert tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "ct.nii.gz").read_bytes() == b"x"


def test_atomic_dir_replaces_whole_folder_only_on_success(tmp_path):
    target = tmp_path / "series"
    with atomic_dir(target) as tmp:
        (tmp / "1.dcm").write_bytes(b"a")
        (tmp / "2.dcm").write_bytes(b"b")
    assert sorted(p.name for p in target.iterdir()) == ["1.dcm", "2.dcm"]
    with pytest.raises(OutputExistsError), atomic_dir(target):
        pass
    with pytest.raises(ValueError), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "3.dcm").write_bytes(b"c")
        raise ValueError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["1.dcm", "2.dcm"]
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "3.dcm").write_bytes(b"c")
    assert sorted(p.name for p in target.iterdir()) == ["3.dcm"]
    assert sorted(os.listdir(tmp_path)) == ["series"]


def test_missing_output_folder_is_an_input_error(tmp_path):
    from medm2g_core.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        write_text(tmp_path / "nope" / "x.txt", "x")


def test_check_folder_writable_finds_the_folder_it_would_be_made_in(tmp_path):
    assert check_folder_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []  # nothing made, nothing left
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with pytest.raises(InputError, match=f"output folder {plain} is not a folder"):
        check_folder_writable(plain / "out")


def sys_refuses_writes() -> bool:
    """/sys takes no new files, even from root (chmod does not stop root; a kernel folder does)."""
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            return False
    except OSError:
        return os.path.isdir("/sys")


@pytest.mark.skipif(not sys_refuses_writes(), reason="needs a /sys that refuses new files")
def test_check_folder_writable_refuses_a_folder_without_permission():
    with pytest.raises(OutputError, match=r"^cannot write into /sys \("):
        check_folder_writable("/sys/medm2g-out/run")
