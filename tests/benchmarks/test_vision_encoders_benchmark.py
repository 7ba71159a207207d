"""The vision encoder benchmark runs at toy size and its numbers hang together."""

import importlib.util
import json

import pytest

from tests.benchmark_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("speed/vision_encoders")


def test_quick_run_reports_every_encoder_it_can_build(bench, tmp_path):
    results = bench.main(["--quick", "--threads", "1", "--no-plot", "--no-large", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "vision_encoders_quick.json").read_text())
    assert saved["encoders"].keys() == results["encoders"].keys()
    assert not (tmp_path / "vision_encoders_quick.partial.json").exists()  # only while running
    expected = {"conv(32,64,128,256)", "conv(16,32,64,128)"}
    if importlib.util.find_spec("timm") is not None:
        expected |= {"resnet18-gn", "resnet18-gn/stage3", "dinov2-s14-reg4", "siglip-b16"}
    else:
        assert "resnet18-gn" in results["config"]["skipped"]
    assert set(results["encoders"]) == expected
    for rows in results["encoders"].values():
        r = rows["32"]
        assert r["size"] == 32 and r["tokens"] >= 1 and r["params"] > 0
        assert 1.5 * r["forward_gflop"] < r["fwd_bwd_gflop"] < 4 * r["forward_gflop"]  # backward ~ 2x forward
        t = r["threads"]["1"]
        assert 0 < t["forward_ms"] < t["fwd_bwd_ms"] * 1.5  # noisy machines: only a loose order


def test_conv_flops_grow_with_the_pixels_and_cnn_sizes_round_up_to_the_stride(bench, tmp_path):
    args = ["--quick", "--threads", "1", "--no-plot", "--only", "conv(32,64,128,256)", "--out", str(tmp_path)]
    rows = bench.main([*args, "--sizes", "32", "64"])["encoders"]["conv(32,64,128,256)"]
    assert rows["64"]["forward_gflop"] == pytest.approx(4 * rows["32"]["forward_gflop"], rel=0.05)
    assert rows["64"]["tokens"] == 4 * rows["32"]["tokens"]
    assert (
        bench.used_size(84, 16) == 96 and bench.used_size(84, None) == 84 and bench.used_size(128, 32) == 128
    )


def test_flops_counted_on_the_meta_device_match_the_cpu_count(bench):
    import torch

    from flowvla.backbones.conv import ConvEncoder

    with torch.device("meta"):
        on_meta = ConvEncoder(32, (8, 16))
    meta = bench.measure(on_meta, 32, 2, [1], min_time=0.01, device="meta")
    cpu = bench.measure(ConvEncoder(32, (8, 16)), 32, 2, [1], min_time=0.01)
    assert meta["forward_gflop"] == cpu["forward_gflop"] > 0 and meta["fwd_bwd_gflop"] == cpu["fwd_bwd_gflop"]
    assert meta["threads"] == {} and cpu["threads"]["1"]["fwd_bwd_ms"] > 0
