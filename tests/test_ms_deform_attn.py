"""Multi-scale deformable attention: the vectorised op against a direct per-point bilinear
computation and against the per-level loop; the MSDeformAttn module's geometry and masking."""
import math

import pytest
import torch

from zsi_d2.modeling.mask_former.ms_deform_attn import MSDeformAttn, ms_deform_attn, ms_deform_attn_per_level

SHAPES = [(3, 4), (2, 2)]  # (H, W) per level; non-square so that x/y swaps show


def direct_ms_deform_attn(value, shapes, locations, weights):
    """Written from the formula, one point at a time: pixel coordinate x * W - 0.5, the four
    neighbours with bilinear weights, zero outside the map, weighted sum over levels and points."""
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = locations.shape
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    out = []
    for n in range(N):
        for q in range(Lq):
            for m in range(M):
                acc = value.new_zeros(D)
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(P):
                        px = locations[n, q, m, lvl, p, 0] * w - 0.5
                        py = locations[n, q, m, lvl, p, 1] * h - 0.5
                        x0, y0 = math.floor(px.item()), math.floor(py.item())
                        fx, fy = px - x0, py - y0
                        for xi, yi, c in (
                            (x0, y0, (1 - fx) * (1 - fy)), (x0 + 1, y0, fx * (1 - fy)),
                            (x0, y0 + 1, (1 - fx) * fy), (x0 + 1, y0 + 1, fx * fy),
                        ):
                            if 0 <= xi < w and 0 <= yi < h:
                                acc = acc + weights[n, q, m, lvl, p] * c * value[n, starts[lvl] + yi * w + xi, m]
                out.append(acc)
    return torch.stack(out).view(N, Lq, M * D)


def _inputs(shapes, N=2, Lq=5, M=2, D=3, P=2, lo=-0.3, hi=1.3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = sum(h * w for h, w in shapes)
    L = len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=dtype)
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=dtype) * (hi - lo) + lo
    weights = torch.rand(N, Lq, M, L, P, generator=g, dtype=dtype)
    return value, loc, weights


def _border_locations(loc):
    """Overwrite points with ones exactly on the map borders (0, 1), far outside, between a
    border and one pixel beyond, and where another level lies on the canvas (one level's y = 2
    or -1.5); none at an integer pixel coordinate (a kink). Points cycle over levels every P = 2
    entries, so each is written 4 times to reach both levels."""
    special = torch.tensor(
        [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.3], [0.7, 0.0], [-2.0, 0.4], [0.4, 3.0],
         [-0.05, -0.1], [1.1, 1.05], [1.0, -0.2], [0.3, 2.0], [0.6, -1.5], [0.45, -0.3], [0.2, 1.3]],
        dtype=loc.dtype,
    )
    flat = loc.view(-1, 2)
    flat[: 4 * len(special)] = special.repeat_interleave(4, dim=0)
    return loc


def _grads(fn, value, shapes, loc, weights, grad_out):
    inputs = [t.detach().clone().requires_grad_() for t in (value, loc, weights)]
    out = fn(inputs[0], shapes, inputs[1], inputs[2])
    grads = torch.autograd.grad(out, inputs, grad_out)
    return out.detach(), grads


def test_vectorised_matches_direct_formula_values_and_gradients():
    torch.manual_seed(0)
    value, loc, weights = _inputs(SHAPES, N=1, Lq=16, M=2, D=3, P=2)
    loc = _border_locations(loc)
    grad_out = torch.randn(1, 16, 2 * 3, dtype=torch.float64)
    out, grads = _grads(ms_deform_attn, value, torch.tensor(SHAPES), loc, weights, grad_out)
    ref, ref_grads = _grads(direct_ms_deform_attn, value, SHAPES, loc, weights, grad_out)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)
    for name, a, b in zip(("value", "sampling_locations", "attention_weights"), grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11), name


def test_pixel_centres_sample_the_pixel():
    """Each point at a pixel centre of its level reads that pixel (no gradient check: the
    location gradient is one-sided there)."""
    value, _, _ = _inputs(SHAPES, N=1, M=1, D=2)
    starts = [0, SHAPES[0][0] * SHAPES[0][1]]
    for lvl, (h, w) in enumerate(SHAPES):
        for i in range(h):
            for j in range(w):
                loc = torch.zeros(1, 1, 1, 2, 1, 2, dtype=torch.float64)
                loc[..., 0], loc[..., 1] = 5.0, 5.0  # the other level: far outside
                loc[0, 0, 0, lvl, 0] = torch.tensor([(j + 0.5) / w, (i + 0.5) / h])
                weights = torch.ones(1, 1, 1, 2, 1, dtype=torch.float64)
                out = ms_deform_attn(value, SHAPES, loc, weights)
                assert torch.allclose(out[0, 0], value[0, starts[lvl] + i * w + j, 0])


def test_points_outside_contribute_nothing():
    value, loc, weights = _inputs(SHAPES)
    loc = loc.clone()
    loc[..., 0] = loc[..., 0].sign() * 3.0 + 0.5  # x at -2.5 or 3.5: beyond every border
    assert ms_deform_attn(value, SHAPES, loc, weights).abs().max() == 0


@pytest.mark.parametrize(
    "shapes",
    [[(3, 4), (2, 2)], [(6, 5), (3, 3), (2, 1)], [(4, 4)], [(2, 7), (5, 3), (1, 1), (3, 2)]],
)
def test_vectorised_matches_per_level_loop(shapes):
    torch.manual_seed(1)
    value, loc, weights = _inputs(shapes, N=2, Lq=7, M=3, D=4, P=3, lo=-0.5, hi=1.5)
    grad_out = torch.randn(2, 7, 3 * 4, dtype=torch.float64)
    out, grads = _grads(ms_deform_attn, value, torch.tensor(shapes), loc, weights, grad_out)
    ref, ref_grads = _grads(ms_deform_attn_per_level, value, shapes, loc, weights, grad_out)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)


def test_float32_matches_per_level_loop():
    shapes = [(16, 16), (8, 8), (4, 4)]
    value, loc, weights = _inputs(shapes, N=2, Lq=50, M=4, D=8, P=4, dtype=torch.float32)
    out = ms_deform_attn(value, shapes, loc, weights)
    ref = ms_deform_attn_per_level(value, shapes, loc, weights)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_shape_errors():
    value, loc, weights = _inputs(SHAPES)
    with pytest.raises(ValueError, match="positions"):
        ms_deform_attn(value, [(3, 4), (2, 3)], loc, weights)
    with pytest.raises(ValueError, match="disagree"):
        ms_deform_attn(value, SHAPES, loc, weights[..., :1])


def _identity_attn(n_levels=1, shift=(0.0, 0.0)):
    """One head, one point, identity projections, every query's offset = `shift` pixels."""
    attn = MSDeformAttn(d_model=4, n_levels=n_levels, n_heads=1, n_points=1).double()
    with torch.no_grad():
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(torch.tensor(shift).repeat(n_levels))
    return attn


@pytest.mark.parametrize("shift", [(1.0, 0.0), (0.0, 1.0), (-1.0, 1.0)])
def test_module_offsets_are_in_pixels_of_the_level(shift):
    """An offset of (dx, dy) from a pixel centre reads the pixel dx columns right, dy rows down."""
    h, w = 3, 4
    attn = _identity_attn(shift=shift)
    shapes = torch.tensor([[h, w]])
    x = torch.randn(1, h * w, 4, dtype=torch.float64)
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ref = torch.stack([(jj.flatten() + 0.5) / w, (ii.flatten() + 0.5) / h], -1).view(1, h * w, 1, 2)
    out = attn(x, ref, x, shapes, torch.tensor([0]))
    dx, dy = int(shift[0]), int(shift[1])
    for i in range(h):
        for j in range(w):
            si, sj = i + dy, j + dx
            expected = x[0, si * w + sj] if (0 <= si < h and 0 <= sj < w) else torch.zeros(4, dtype=torch.float64)
            assert torch.allclose(out[0, i * w + j], expected), (i, j)


def test_module_shapes_and_init():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    shapes = torch.tensor([[4, 6], [2, 3], [1, 2]])
    S = int(shapes.prod(1).sum())
    q = torch.randn(2, 5, 32)
    out = attn(q, torch.rand(2, 5, 3, 2), torch.randn(2, S, 32), shapes, None)
    assert out.shape == (2, 5, 32)
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    # Head 0 looks right, head 1 down (angle pi/2), point k at k + 1 pixels, on every level.
    assert torch.allclose(bias[0, :, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(bias[0, :, 1], torch.tensor([2.0, 0.0]))
    assert torch.allclose(bias[1, :, 1], torch.tensor([0.0, 2.0]), atol=1e-6)
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.sampling_offsets.weight.abs().sum() == 0
    with pytest.raises(ValueError):
        MSDeformAttn(d_model=30, n_heads=8)


def test_module_padding_mask_removes_those_values():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=3).double()
    with torch.no_grad():  # spread the points so that they reach the masked positions
        attn.sampling_offsets.weight.normal_(0, 0.5)
    shapes = torch.tensor([[3, 4], [2, 2]])
    S = 16
    q = torch.randn(2, 6, 16, dtype=torch.float64)
    ref = torch.rand(2, 6, 2, 2, dtype=torch.float64)
    x = torch.randn(2, S, 16, dtype=torch.float64)
    mask = torch.zeros(2, S, dtype=torch.bool)
    mask[0, :5] = True
    mask[1, 12:] = True
    x2 = x.clone()
    x2[mask] = torch.randn(int(mask.sum()), 16, dtype=torch.float64) * 10
    out = attn(q, ref, x, shapes, None, mask)
    out2 = attn(q, ref, x2, shapes, None, mask)
    assert torch.allclose(out, out2)
    assert not torch.allclose(attn(q, ref, x, shapes, None), attn(q, ref, x2, shapes, None))
    x2.requires_grad_()
    attn(q, ref, x2, shapes, None, mask).sum().backward()
    assert x2.grad[mask].abs().max() == 0 and x2.grad[~mask].abs().max() > 0


def mask2former_msdeformattn_forward(attn, query, reference_points, input_flatten, spatial_shapes, padding_mask=None):
    """Mask2Former's MSDeformAttn.forward (ops/modules/ms_deform_attn.py) on `attn`'s weights, with the
    per-level `ms_deform_attn_core_pytorch`: one softmax over levels x points per query and head,
    offsets divided by (W_l, H_l) of their level."""
    N, Lq, _ = query.shape
    _, S, _ = input_flatten.shape
    M, L, P = attn.n_heads, attn.n_levels, attn.n_points
    value = attn.value_proj(input_flatten)
    if padding_mask is not None:
        value = value.masked_fill(padding_mask[..., None], 0.0)
    value = value.view(N, S, M, attn.d_model // M)
    offsets = attn.sampling_offsets(query).view(N, Lq, M, L, P, 2)
    weights = torch.softmax(attn.attention_weights(query).view(N, Lq, M, L * P), -1).view(N, Lq, M, L, P)
    normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
    locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    return attn.output_proj(ms_deform_attn_per_level(value, spatial_shapes, locations, weights))


def _random_module_inputs(n_levels=3, seed=0):
    """A module whose offsets and attention logits depend on the query (the published init zeroes
    both matrices, which would hide a wrong softmax axis or offset scale), and its inputs."""
    torch.manual_seed(seed)
    attn = MSDeformAttn(d_model=16, n_levels=n_levels, n_heads=2, n_points=3).double()
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 1.0)
        attn.attention_weights.bias.normal_(0, 1.0)
    shapes = torch.tensor([[5, 3], [3, 2], [2, 4]][:n_levels])
    S = int(shapes.prod(1).sum())
    q = torch.randn(2, 7, 16, dtype=torch.float64)
    ref = torch.rand(2, 7, n_levels, 2, dtype=torch.float64)
    x = torch.randn(2, S, 16, dtype=torch.float64)
    mask = torch.rand(2, S) < 0.2
    return attn, q, ref, x, shapes, mask


def test_module_equals_mask2former_forward():
    attn, q, ref, x, shapes, mask = _random_module_inputs()
    for padding_mask in (None, mask):
        out = attn(q, ref, x, shapes, None, padding_mask)
        expected = mask2former_msdeformattn_forward(attn, q, ref, x, shapes, padding_mask)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


def test_module_attention_weights_sum_to_one_over_levels_and_points(monkeypatch):
    """Per query and head, the weights of all levels x points together sum to 1 (one softmax), so a
    level's weights alone do not."""
    import zsi_d2.modeling.mask_former.ms_deform_attn as module

    seen = []

    sample = module._sample

    def recording(canvas, grid, weights):
        seen.append(weights)
        return sample(canvas, grid, weights)

    monkeypatch.setattr(module, "_sample", recording)
    attn, q, ref, x, shapes, _ = _random_module_inputs()
    attn(q, ref, x, shapes, None)
    (weights,) = seen
    assert weights.shape == (2, 7, 2, 3, 3)  # (N, Lq, heads, levels, points)
    torch.testing.assert_close(weights.sum((-2, -1)), torch.ones(2, 7, 2, dtype=torch.float64))
    assert (weights.sum(-1) - 1).abs().max() > 0.1


def test_exported_module_has_no_scattered_writes_or_selects(tmp_path):
    """The ONNX graph of the module keeps the form onnxruntime runs fast (docs/deployment.md): the
    canvas by pads and a concatenation (no ScatterND), the band by a clamp (no Where), and no op on
    the (N, Lq, M, L, P, 2) sampling tensors broadcasting over an inner dimension."""
    onnx = pytest.importorskip("onnx")
    attn, q, ref, x, shapes, _ = _random_module_inputs()
    attn = attn.float().eval()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, q, x):
            return self.attn(q, ref.float(), x, shapes, None)

    path = tmp_path / "attn.onnx"
    torch.onnx.export(Wrapped().eval(), (q.float(), x.float()), str(path), opset_version=17, dynamo=False)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    shapes_of = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    shapes_of.update({i.name: list(onnx.numpy_helper.to_array(i).shape) for i in graph.initializer})
    ops = {node.op_type for node in graph.node}
    assert "GridSample" in ops and not ops & {"ScatterND", "ScatterElements"}, sorted(ops)
    # (the exporter's Where on 1-D shape vectors, from expand, is folded away by onnxruntime)
    data_selects = [n.name for n in graph.node if n.op_type == "Where" and len(shapes_of.get(n.output[0], [])) > 1]
    assert not data_selects
    # broadcasts, on the traced graph's concrete shapes
    traced = torch.jit.trace(Wrapped().eval(), (q.float(), x.float()))
    elementwise = {"aten::add", "aten::sub", "aten::mul", "aten::div", "aten::addcmul", "aten::clamp",
                   "aten::maximum", "aten::minimum", "aten::where"}
    checked = 0
    for node in traced.inlined_graph.nodes():
        if node.kind() not in elementwise:
            continue
        dims = [list(v.type().sizes()) for v in node.inputs()
                if isinstance(v.type(), torch._C.TensorType) and v.type().sizes() is not None]
        if not dims or max(len(d) for d in dims) < 6:
            continue
        checked += 1
        rank = max(len(d) for d in dims)
        for d in dims:  # broadcast only over leading dimensions: no 1 after a full size
            padded = [1] * (rank - len(d)) + d
            full = [i for i, size in enumerate(padded) if size != 1]
            assert not full or 1 not in padded[full[0]:], (node.kind(), dims)
    assert checked >= 2  # the grid's sum and its clamp
