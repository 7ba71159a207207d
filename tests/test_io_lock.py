"""``flowvla.io.folder_lock``: two real processes never hold one folder at once; a dead holder's lock is
released by the OS; the demonstration generator takes it before any work."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowvla.io import FolderBusyError, folder_lock

ROOT = Path(__file__).resolve().parents[1]


def _hold(folder: Path, seconds: float) -> subprocess.Popen:
    """A process that takes the lock, says so on stdout, and holds it ``seconds``."""
    code = textwrap.dedent(f"""
        import sys, time
        from flowvla.io import folder_lock
        with folder_lock({str(folder)!r}):
            print("held", flush=True)
            time.sleep({seconds})
            open({str(folder / "done")!r}, "w").close()  # the last thing done under the lock
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_refuses_or_waits_for_the_first(tmp_path):
    holder = _hold(tmp_path, 1.5)
    try:
        with pytest.raises(FolderBusyError, match=rf"pid {holder.pid}\) is writing into it"):
            with folder_lock(tmp_path, wait=False):
                pass
        said = []
        t0 = time.monotonic()
        with folder_lock(tmp_path, on_wait=said.append):
            waited = time.monotonic() - t0
            assert (tmp_path / "done").is_file()  # the holder had finished before this one got in
        assert waited > 0.5 and len(said) == 1 and "waiting" in said[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _hold(tmp_path, 60)
    holder.kill()
    holder.wait()
    with folder_lock(tmp_path, wait=False) as path:
        assert path.read_text().strip() == str(__import__("os").getpid())


def test_the_generator_refuses_a_folder_another_job_writes_into(tmp_path):
    pytest.importorskip("h5py")
    from flowvla.recipes.generate import GenerateConfig, generate

    holder = _hold(tmp_path, 30)
    try:
        cfg = GenerateConfig(
            out_dir=str(tmp_path), tasks=[0], demos_per_task=1, progress=False, wait_for_lock=False
        )
        with pytest.raises(FolderBusyError):
            generate(cfg)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing was written
    finally:
        holder.kill()
        holder.wait()
