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


def test_a_step_folder_reaches_the_disk_before_it_is_named(tmp_path, monkeypatch):
    # Every file of a checkpoint is synced before its folder is renamed into place, the folder
    # before the rename, the parent after it (a rename alone can reach the disk first), and a
    # pointer (latest/best) before it is renamed over the old one.
    import torch

    from sparse_transformer import ModelConfig

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    final = tmp_path / "step-00000001"
    io.write_step_folder(final, {"w": torch.zeros(2)}, ModelConfig.from_preset("wiki-tiny"),
                         train={"step": 1}, state={"step": 1})
    synced = [p for kind, p in events if kind == "sync"]
    tmp = next(p for p in synced if ".step-00000001.tmp-" in p and p.endswith(io.STATE_NAME))
    folder = tmp.rsplit("/", 1)[0]
    for name in (io.WEIGHTS_NAME, io.CONFIG_NAME, io.TRAIN_NAME, io.STATE_NAME):
        # JSON goes through its own temporary sibling, synced under that name
        assert any(p == f"{folder}/{name}" or p.startswith(f"{folder}/.{name}.tmp-")
                   for p in synced), (name, synced)
    rename = events.index(("rename", str(final)))
    assert ("sync", folder) in events[:rename]
    assert ("sync", str(tmp_path)) in events[rename:]
    events.clear()
    io.point(tmp_path, io.LATEST, final.name)
    assert [kind for kind, _ in events] == ["sync", "rename", "sync"]
    assert (tmp_path / io.LATEST).read_text() == final.name + "\n"
