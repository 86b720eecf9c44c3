"""Atomic writes: the file appears whole or not at all, with the permissions of any new file, and the
temporaries a kill leaves behind are cleaned when the run resumes."""

from __future__ import annotations

import os
import stat

import pytest

from medlite.files import atomic_write, remove_stale_temporaries


def test_atomic_write_follows_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write(tmp_path / "ckpt.safetensors", lambda t: open(t, "wb").write(b"x"))
        plain = tmp_path / "plain.txt"
        plain.write_text("y")  # how the run's other files are created
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_failed_write_leaves_nothing_and_stale_temporaries_are_removed(tmp_path):
    def boom(tmp):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "last.safetensors", boom)
    assert list(tmp_path.iterdir()) == []
    # what a kill -9 between mkstemp and rename leaves: a 0-byte .NAME.XXXX.tmp
    stale = tmp_path / ".last.safetensors.abc123.tmp"
    stale.write_bytes(b"")
    keep = tmp_path / "notes.tmp"  # not a name atomic_write makes
    keep.write_text("mine")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and keep.exists()


def test_resume_cleans_the_run_folder(tiny_npz, tmp_path):
    from medlite.engine.tasks.classify import TrainConfig, train

    cfg = TrainConfig(model="vit_tiny_patch16_224", data=str(tiny_npz), size=16, epochs=1, batch_size=32,
                      out=str(tmp_path / "run"), model_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
                      n_boot=10, progress=False, plots=False)
    train(cfg)
    stale = tmp_path / "run" / ".last.safetensors.k9k9.tmp"
    stale.write_bytes(b"")
    train(TrainConfig.from_dict({**cfg.__dict__, "epochs": 2}), resume=True)
    assert not stale.exists()
