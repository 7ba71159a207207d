"""A missing optional dependency raises one line naming the extra, installable from the index and
from a source checkout."""

import sys

import pytest

from flowvla.extras import EXTRAS, MissingExtraError, install_command, requires_extra


def _hide(monkeypatch, *modules):
    """Make ``import <module>`` fail as if the package were not installed."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.delitem(sys.modules, name)
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def _assert_one_line_naming(error, extra):
    msg = str(error)
    assert "\n" not in msg
    assert f'pip install "flowvla[{extra}]"' in msg and f'pip install -e ".[{extra}]"' in msg


def test_install_commands():
    assert install_command("data") == 'pip install "flowvla[data]"'
    assert install_command("hf", editable=True) == 'pip install -e ".[hf]"'
    assert install_command("libero").endswith("pip install --no-deps libero==0.1.1 bddl==1.0.1")
    with pytest.raises(ValueError, match="extra"):
        install_command("gpu")
    assert set(EXTRAS) == {"hf", "data", "libero", "timm", "bench", "docs"}


def test_requires_extra_names_the_missing_module(monkeypatch):
    _hide(monkeypatch, "h5py")
    with pytest.raises(MissingExtraError) as e, requires_extra("data", "reading HDF5"):
        import h5py  # noqa: F401
    _assert_one_line_naming(e.value, "data")
    assert "h5py is not installed" in str(e.value) and str(e.value).startswith("reading HDF5")
    assert isinstance(e.value, ImportError)


def test_a_refusing_package_keeps_its_reason():
    with pytest.raises(MissingExtraError, match="requires the PIL library"), requires_extra("hf", "x"):
        raise ImportError("\nAutoImageProcessor requires the PIL library but it was not found.\nmore")


def test_hdf5_without_h5py(monkeypatch, tmp_path):
    from flowvla.data.hdf5 import merge_hdf5

    _hide(monkeypatch, "h5py")
    with pytest.raises(MissingExtraError) as e:
        merge_hdf5([tmp_path / "a.hdf5"], tmp_path / "b.hdf5")
    _assert_one_line_naming(e.value, "data")


def test_lerobot_without_pyarrow(monkeypatch, tmp_path):
    from flowvla.data.lerobot import LeRobotSource

    _hide(monkeypatch, "pyarrow")
    with pytest.raises(MissingExtraError) as e:
        LeRobotSource(tmp_path)
    _assert_one_line_naming(e.value, "data")


def test_backbone_without_transformers(monkeypatch):
    from flowvla.backbones.composed import ComposedBackbone

    _hide(monkeypatch, "transformers", "tokenizers")
    with pytest.raises(MissingExtraError) as e:
        ComposedBackbone.tiny(["open the drawer"], image_size=16, patch_size=8)
    _assert_one_line_naming(e.value, "hf")


def test_libero_missing(monkeypatch):
    from flowvla.envs import libero_setup as ls

    real = ls.importlib.util.find_spec
    monkeypatch.setattr(ls.importlib.util, "find_spec", lambda name: None if name == "libero" else real(name))
    with pytest.raises(MissingExtraError) as e:
        ls.find_libero_root()
    _assert_one_line_naming(e.value, "libero")
    assert "--no-deps libero==0.1.1 bddl==1.0.1" in str(e.value)
