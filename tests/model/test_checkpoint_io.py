"""model/checkpoint_io.py: what pruning may delete, what a failed write leaves, and the one
line a full disk gives (the tmpfs tests in tests/cli/test_full_disk.py run the real thing)."""

from __future__ import annotations

import errno
import os

import pytest

from sparse_transformer.model import checkpoint_io as io


def test_pruning_deletes_only_step_folders_we_named(tmp_path):
    """Issue 20: pruning globbed step-* and deleted a user's step-00000006.bak folder."""
    for step in (1, 2, 3, 4):
        (tmp_path / io.step_name(step)).mkdir()
    (tmp_path / "step-00000001.bak").mkdir()
    (tmp_path / "step-1").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "step-00000000")  # sorts first
    io.point(tmp_path, io.BEST, "step-00000002")
    io.prune(tmp_path, keep_last=1, keep="step-00000004")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best", "elsewhere", "step-00000000", "step-00000001.bak", "step-00000002",
        "step-00000004", "step-1"]


def test_a_failed_folder_write_leaves_nothing_and_says_what(tmp_path):
    final = tmp_path / "step-00000003"

    def fill(tmp):
        (tmp / "model.safetensors").write_bytes(b"half")
        raise io._disk_error(OSError(errno.ENOSPC, "No space left on device"),
                             tmp / "state.pt")

    with pytest.raises(OSError) as info:
        io.write_folder(final, fill)
    assert str(info.value) == (f"[Errno 28] No space left on device while writing "
                               f"{final / 'state.pt'}")
    assert info.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())


def test_an_existing_folder_is_replaced_whole_or_kept(tmp_path):
    final = tmp_path / "m"
    final.mkdir()
    (final / "config.json").write_text("old")

    def interrupted(tmp):
        (tmp / "config.json").write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.write_folder(final, interrupted)
    assert (final / "config.json").read_text() == "old"
    io.write_folder(final, lambda tmp: (tmp / "config.json").write_text("new"))
    assert (final / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("raised", [
    Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_the_errors_of_safetensors_and_torch_save_are_read_as_oserrors(raised):
    """safetensors raises its own type with the errno in its text; torch.save into a Python
    file raises RuntimeError("unexpected pos ...") with the OSError as its context."""
    assert io._as_os_error(raised).errno == errno.ENOSPC
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 74752")
    wrapped.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert io._as_os_error(wrapped).errno == errno.ENOSPC
    assert io._as_os_error(RuntimeError("something else")) is None


def test_clean_temporaries_matches_only_our_names(tmp_path):
    for name in (".step-00000009.tmp-12", ".step-00000003.old-12", ".latest.tmp-7",
                 ".best.tmp-7"):
        (tmp_path / name).mkdir() if name.startswith(".step") else (tmp_path / name).touch()
    for name in (".step-9.tmp-12", ".latest.tmp-x", "notes.tmp-1", ".step-00000001.bak"):
        (tmp_path / name).touch()
    assert io.clean_temporaries(tmp_path) == [".best.tmp-7", ".latest.tmp-7",
                                              ".step-00000003.old-12", ".step-00000009.tmp-12"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".latest.tmp-x", ".step-00000001.bak", ".step-9.tmp-12", "notes.tmp-1"]
