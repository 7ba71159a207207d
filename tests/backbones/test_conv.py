"""ConvEncoder: tokens on its patch grid (row-major, local), composed into a backbone, saved and loaded."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.backbones.conv import ConvEncoder
from flowvla.typing import TypeCheckError


@settings(deadline=None, max_examples=15)
@given(
    stages=st.integers(1, 4),
    cells=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    width=st.sampled_from([4, 8, 12]),
    blocks=st.integers(0, 2),
)
def test_token_count_and_width_follow_the_grid(stages, cells, width, blocks):
    stride = 2**stages
    size = (cells[0] * stride, cells[1] * stride)
    enc = ConvEncoder(size, [width] * stages, blocks=blocks, groups=4)
    out = enc(torch.rand(2, 3, *size))
    assert enc.patch_grid.patch_size == (stride, stride) and enc.patch_grid.grid_size == cells
    assert out.shape == (2, cells[0] * cells[1], width) == (2, enc.patch_grid.num_patches, enc.num_features)


def test_position_embedding_tells_identical_cells_apart():
    """A blank image has the same conv features at interior cells; the tokens still differ by position."""
    enc = ConvEncoder(128, (8, 16, 16)).eval()  # 16 x 16 grid; zero padding reaches 3 cells in
    blank = torch.full((1, 3, 128, 128), 0.5)
    with torch.no_grad():
        tokens = enc(blank)[0]
        feats = enc.stages(enc.stem(blank))[0].flatten(1).T
    interior = [16 * r + c for r in range(6, 10) for c in range(6, 10)]
    assert torch.allclose(feats[interior], feats[interior[0]].expand(len(interior), -1), atol=1e-5)
    assert torch.cdist(tokens[interior], tokens[interior]).add(torch.eye(len(interior))).min() > 1e-3


def test_images_whose_size_does_not_fit_the_stride_are_refused():
    with pytest.raises(ValueError, match="image_size"):
        ConvEncoder(100, (8, 8, 8))  # stride 8 does not divide 100
    with pytest.raises(ValueError, match="blocks"):
        ConvEncoder(32, (8, 8), blocks=-1)
    enc = ConvEncoder(32, (8, 8))
    with pytest.raises((ValueError, TypeCheckError), match="images"):
        enc(torch.rand(1, 3, 24, 32))


def test_composed_conv_backbone_round_trips_through_its_spec(tmp_path):
    pytest.importorskip("transformers")
    from flowvla.backbones.composed import ComposedBackbone

    texts = ["pick up the bowl", "open the drawer"]
    bb = ComposedBackbone.tiny(texts, image_size=32, vision="conv", conv_channels=(8, 16), lm_dim=32).eval()
    assert bb.vision_source == "conv" and bb.patch_grid.grid_size == (8, 8) and bb.visual_dim == 16
    bb.save_tokenizer(tmp_path)
    rebuilt = ComposedBackbone.from_spec(bb.spec(), tmp_path).eval()
    rebuilt.load_state_dict(bb.state_dict(), strict=True)
    images = torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8)
    a, b = bb(images, texts), rebuilt(images, texts)
    assert torch.equal(a.hidden_states[-1], b.hidden_states[-1])
    assert a.image_token_mask.sum(-1).tolist() == [2 * 64, 2 * 64]
    with pytest.raises(ValueError, match="vision"):
        ComposedBackbone.tiny(texts, image_size=32, vision="resnet")


# A subprocess: the oneDNN kernel this guards against corrupts the heap, which would abort pytest.
_GRADIENT_CHECK = """
import sys, torch
from flowvla.backbones.conv import ConvEncoder
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
enc = ConvEncoder(32, (4, 6, 8))
ref = ConvEncoder(32, (4, 6, 8)).double().to(memory_format=torch.contiguous_format)
ref.load_state_dict(enc.state_dict())
x = torch.rand(16, 3, 32, 32)
enc(x).square().mean().backward()
ref(x.double()).square().mean().backward()
worst = max(
    ((p.grad - q.grad).abs().max() / q.grad.abs().max()).item()
    for p, q in zip(enc.parameters(), ref.parameters(), strict=True)
)
print(worst)
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_narrow_stages_get_the_float64_gradients_on_the_cpu(threads):
    # Widths below 8 once went through a oneDNN strided 1x1 kernel that crashed (1 thread) or
    # returned wrong weight gradients (2 threads) on AVX2 machines.
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _GRADIENT_CHECK, str(threads)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout) < 1e-4


def test_strided_shortcut_equals_a_strided_1x1_convolution():
    from flowvla.backbones.conv import _StridedPointwise

    conv = _StridedPointwise(5, 7, 2).double()
    plain = torch.nn.Conv2d(5, 7, 1, 2, bias=False).double()
    plain.load_state_dict(conv.state_dict())
    for size in (8, 9):  # odd sizes: both keep the first row and column, ceil(H / 2) of them
        x = torch.randn(2, 5, size, size, dtype=torch.float64)
        torch.testing.assert_close(conv(x), plain(x))
