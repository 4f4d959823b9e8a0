"""vertebra.optimize's fused-graph path: backbones traced, frozen and fused by oneDNN Graph.

Every comparison runs the optimized model three times and checks the third output: TorchScript's
profiling executor runs a new graph unfused twice before it optimizes (and fuses) it, so an earlier
output would not test the fused kernels.  ``_fusion_groups`` checks that fusion really happened.
"""

from __future__ import annotations

import copy
import threading
import warnings

import pytest
import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from vertebra import registry
from vertebra.inference import optimize
from vertebra.inference.backbone import FastBackbone
from vertebra.inference.fusion import FusedConv2d
from vertebra.inference.graph import InferenceGraph, InPlaceSqueezeExcitation, gates_in_place, graph_available
from optimize_support import assert_same, randomize_norms, settled

pytestmark = pytest.mark.skipif(not graph_available(), reason="this torch build has no oneDNN Graph fuser")

SIZE = 64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _fusion_groups() -> int:
    """oneDNN fusion groups in the graph TorchScript executed last."""
    return str(torch.jit.last_executed_optimized_graph()).count("prim::oneDNNFusionGroup")


@pytest.mark.parametrize("name, output_stride", [("mobilenet_v3_large", 32), ("efficientnet_b0", 8),
                                                  ("efficientnet_v2_s", 16)])
def test_graph_backbone_matches_and_is_fused(name, output_stride):
    backbone = randomize_norms(registry.build_backbone(name, output_stride=output_stride)).eval()
    fast = optimize(backbone)
    report = fast.optimization_report
    assert report["graph_backbones"] == 1 and isinstance(fast._inference_graph, InferenceGraph)
    assert report["fused_conv"] == report["fused_se"] == report["tiled_backbones"] == 0  # the graph's job
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = backbone(x)
    actual = settled(fast, x)
    assert _fusion_groups() > 0
    assert len(fast._inference_graph) == 1
    assert_same(actual, expected)


def test_block_squeeze_excitation_gates_in_place_only_inside_the_traced_graph():
    backbone = randomize_norms(registry.build_backbone("efficientnet_b0")).eval()
    gates = [m for m in backbone.modules() if isinstance(m, SqueezeExcitation)]
    assert len(gates) == 16  # one per MBConv block
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = backbone(x)
    fast = optimize(backbone)
    actual = settled(fast, x)
    assert str(torch.jit.last_executed_optimized_graph()).count("aten::mul_") == len(gates)
    assert_same(actual, expected)
    assert all(type(m) is SqueezeExcitation for m in fast.modules() if isinstance(m, SqueezeExcitation))

    gate = gates[3]
    features = torch.rand(2, gate.fc1.in_channels, 8, 8)
    kept = features.clone()
    with torch.no_grad():  # an eager call: torchvision's out-of-place gate, a hook's tensor stays intact
        assert gate(features).data_ptr() != features.data_ptr()
    with gates_in_place(backbone):
        assert type(gate) is InPlaceSqueezeExcitation
        with torch.enable_grad():  # autograd needs the input: never in place
            assert gate(features).data_ptr() != features.data_ptr()
        other_thread = []
        with torch.no_grad():
            worker = threading.Thread(target=lambda: other_thread.append(gate(features).data_ptr()))
            worker.start()
            worker.join()
        assert other_thread and other_thread[0] != features.data_ptr()  # the context is this thread's only
        assert torch.equal(features, kept)
        with torch.no_grad():
            out = gate(features)
            expected_gate = gate._scale(kept) * kept
    assert type(gate) is SqueezeExcitation  # restored after the context
    assert out.data_ptr() == features.data_ptr()  # gated in place: the same storage
    torch.testing.assert_close(out, expected_gate)


def test_only_gates_whose_input_is_a_fresh_conv_output_go_in_place():
    """An SE whose input the caller may still read (first in its Sequential, or after an Identity) stays
    out of place even while tracing."""
    first = nn.Sequential(SqueezeExcitation(8, 2), Conv2dNormActivation(8, 8, 1))
    after_identity = nn.Sequential(nn.Identity(), SqueezeExcitation(8, 2))
    after_conv = nn.Sequential(Conv2dNormActivation(8, 8, 1), SqueezeExcitation(8, 2))
    model = nn.Sequential(first, after_identity, after_conv)
    with gates_in_place(model):
        assert [type(m[i]) for m, i in ((first, 0), (after_identity, 1), (after_conv, 1))] == [
            SqueezeExcitation, SqueezeExcitation, InPlaceSqueezeExcitation]
    assert type(after_conv[1]) is SqueezeExcitation


def test_forward_hooks_inside_the_backbone_run_because_it_goes_eager_while_they_exist():
    backbone = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    fast = optimize(backbone)
    x = torch.randn(1, 3, SIZE, SIZE)
    settled(fast, x)
    with torch.no_grad():
        expected = backbone(x)
    inner = fast.features[3]
    seen: list[nn.Module] = []
    for register in (inner.register_forward_hook, nn.modules.module.register_module_forward_hook):
        handle = register(lambda module, args, out: seen.append(module))  # on a submodule, then global
        with torch.no_grad():
            out = fast(x)
        handle.remove()
        assert any(module is inner for module in seen), "the hook did not run on the submodule"
        assert_same(out, expected)
        seen.clear()
    with torch.no_grad():
        fast(x)
    assert not seen and _fusion_groups() > 0 and len(fast._inference_graph) == 1  # back on the same graph


def test_each_shape_gets_its_own_graph_and_the_cache_is_bounded():
    backbone = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    fast = optimize(backbone)
    cache = fast._inference_graph
    shapes = [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 96, 64), (1, 3, 64, 96), (3, 3, 64, 64)]
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = backbone(x)
        assert_same(settled(fast, x), expected)
    assert len(cache) == cache.max_graphs == 4 < len(shapes)
    assert [key[0] for key in cache._graphs] == shapes[1:]  # least recently used went first


def test_weights_changed_after_the_first_call_are_seen():
    """In-place edits (as load_state_dict makes) retrace instead of running stale frozen constants."""
    fast = optimize(randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval())
    x = torch.randn(1, 3, SIZE, SIZE)
    before = settled(fast, x)
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(2.0)
    after = settled(fast, x)
    with torch.enable_grad():  # autograd on: the eager forward, with the edited weights
        eager = {name: level.detach() for name, level in fast(x).items()}
    assert not torch.allclose(after["C5"], before["C5"])
    assert_same(after, eager)
    assert len(fast._inference_graph) == 1  # the stale graph was dropped, not kept or counted as evicted
    assert fast._inference_graph._evictions == 0


def test_shapes_that_keep_changing_send_the_backbone_back_to_eager():
    """Cycling through more shapes than the cache holds would retrace on every call."""
    backbone = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    fast = optimize(backbone)
    cache = fast._inference_graph
    sizes = [64, 72, 80, 88, 96]  # one more than the cache holds
    with pytest.warns(RuntimeWarning, match="input shapes change too often"):
        with torch.no_grad():
            for size in sizes * 3:
                x = torch.randn(1, 3, size, size)
                assert_same(fast(x), backbone(x))
    assert cache.disabled_because is not None and len(cache) == 0
    assert cache._evictions == 2 * cache.max_graphs


def test_graph_steps_aside_for_autograd_training_and_other_devices_or_dtypes():
    fast = optimize(randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval())
    x = torch.randn(1, 3, SIZE, SIZE)
    fast(x)  # autograd on
    with torch.no_grad():
        fast.train()(x)
        fast.eval()
        fast.double()(x.double())  # float64: the eager forward
        fast.float()
    assert len(fast._inference_graph) == 0
    settled(fast, x)
    assert len(fast._inference_graph) == 1


def test_fusion_switch_is_restored_after_each_call():
    fast = optimize(randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval())
    before = torch.jit.onednn_fusion_enabled()
    settled(fast, torch.randn(1, 3, SIZE, SIZE))
    assert torch.jit.onednn_fusion_enabled() == before


def test_copies_and_pickles_drop_cached_graphs(tmp_path):
    backbone = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    fast = optimize(backbone)
    x = torch.randn(1, 3, SIZE, SIZE)
    settled(fast, x)
    clone = copy.deepcopy(fast)
    assert len(clone._inference_graph) == 0 and clone._inference_graph is not fast._inference_graph
    torch.save(fast, tmp_path / "fast.pt")  # a frozen ScriptModule would not pickle
    loaded = torch.load(tmp_path / "fast.pt", weights_only=False)
    with torch.no_grad():
        expected = backbone(x)
    assert_same(settled(clone, x), expected)
    assert_same(settled(loaded, x), expected)
    assert set(clone.state_dict()) == set(fast.state_dict())


class _ValueDependent(nn.Module):
    """A layer whose Python branches on a tensor's value: a trace would freeze one branch."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) if x.mean() > -1e9 else -self.inner(x)


class _Untraceable(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("this layer cannot be traced")
        return self.inner(x)


@pytest.mark.parametrize("wrapper, reason", [(_ValueDependent, "may depend on values"),
                                             (_Untraceable, "tracing failed")])
def test_backbone_that_does_not_trace_cleanly_stays_eager_with_a_warning(wrapper, reason):
    backbone = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    backbone.features[1] = wrapper(backbone.features[1])
    fast = optimize(backbone)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = backbone(x)
    with pytest.warns(RuntimeWarning, match=f"runs eagerly.*{reason}"):
        with torch.no_grad():
            first = fast(x)
    assert reason in fast._inference_graph.disabled_because and len(fast._inference_graph) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once: no second trace, no second warning
        assert_same(settled(fast, x), expected)
    assert_same(first, expected)


def test_heads_outside_the_graph_still_get_the_eager_rewrites():
    model = randomize_norms(registry.build("lraspp", backbone="mobilenet_v3_large", num_classes=3)).eval()
    fast = optimize(model)
    report = fast.optimization_report
    assert report["graph_backbones"] == 1 and report["fused_conv"] > 0
    assert not any(isinstance(m, FusedConv2d) for m in fast.backbone.modules())
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)["out"]
    assert_same(settled(fast, x)["out"], expected)


def test_compile_and_the_switch_leave_backbones_eager():
    backbone = registry.build_backbone("mobilenet_v3_small").eval()
    assert getattr(optimize(backbone, graph=False), "_inference_graph", None) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = optimize(backbone, compile={"backend": "eager"})
    assert compiled.optimization_report["graph_backbones"] == 0
    assert not isinstance(compiled._orig_mod, FastBackbone)  # neither graph nor tiling attached
