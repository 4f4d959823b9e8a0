"""check_backbone (vertebra.plugins.testing): a broken backbone gets one clear message per flaw, a sound
one passes; the registry's own meta forward check refuses the same flaws at build time."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from torch import nn

from vertebra import registry
from vertebra.errors import ConformanceError, IncompatibleError
from vertebra.features import FeatureInfo, FeatureSpec
from vertebra.plugins import hookimpl
from vertebra.plugins.testing import CHECKS, check_backbone

QUICK = {"heads": [], "sizes": ((33, 47),), "output_strides": (16,)}


class _Pyramid(nn.Module):
    """Three levels at strides 2, 4, 8 (8, 16, 32 channels); each flaw below breaks one promise."""

    def __init__(self, out_indices=None, output_stride: int = 32, flaw: str | None = None):
        super().__init__()
        self.stages = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                                    for c_in, c_out in ((3, 8), (8, 16), (16, 32)))
        every = [FeatureSpec("C1", 8, 2, 0), FeatureSpec("C2", 16, 4, 1), FeatureSpec("C3", 32, 8, 2)]
        if flaw == "channels":
            every[1] = FeatureSpec("C2", 24, 4, 1)
        if flaw == "strides":
            every[2] = FeatureSpec("C3", 32, 16, 2)
        self.all_levels = FeatureInfo(every)
        chosen = range(3) if out_indices is None or flaw == "out_indices" else [i % 3 for i in out_indices]
        self.feature_info = FeatureInfo(every[i] for i in sorted(chosen))
        self.flaw = flaw

    def forward(self, x):
        out = OrderedDict()
        for spec, stage in zip(self.all_levels, self.stages):
            x = stage(x)
            out[spec.name] = x
        if self.flaw == "list":
            return list(out.values())
        return OrderedDict((s.name, out[s.name]) for s in self.feature_info)


def _factory(flaw):
    def pyramid(out_indices=None, output_stride: int = 32):
        return _Pyramid(out_indices, output_stride, flaw)
    return pyramid


@pytest.mark.parametrize("flaw, message", [
    ("channels", "contract: at 33x47: level 'C2': feature_info declares 24 channels, forward produced 16 channels"),
    ("strides", "contract: at 33x47: level 'C3': feature_info declares stride 16 (a 3x3 map), forward produced 5x6"),
    ("list", "contract: at 33x47: forward returned a list, not a mapping of the levels ['C1', 'C2', 'C3']"),
    ("out_indices", "out_indices: out_indices=[0, -1] declares C1 8ch/2, C2 16ch/4, C3 32ch/8, expected "
                    "C1 8ch/2, C3 32ch/8"),
])
def test_each_flaw_is_one_clear_violation(flaw, message):
    with pytest.raises(ConformanceError) as caught:
        check_backbone(_factory(flaw), **QUICK)
    assert caught.value.report.violations == [message]
    assert message in str(caught.value)


def test_a_sound_backbone_passes_and_refusals_are_reported():
    report = check_backbone(_factory(None), **QUICK)
    assert report.passed == ["contract", "output_stride", "out_indices", "meta", "state_dict", "heads", "export"]
    assert [r.split(":")[0] for r in report.refused] == ["freeze", "checkpointing"]  # it has neither
    assert registry.list_backbones("vertebra_conformance:*") == []  # the throwaway plugin is gone


def test_unknown_checks_and_non_factories_are_refused():
    with pytest.raises(ConformanceError, match="unknown check"):
        check_backbone(_factory(None), checks=["contract", "speed"])
    with pytest.raises(ConformanceError, match="registered name or a factory"):
        check_backbone(42)
    assert "heads" in CHECKS


@pytest.mark.parametrize("flaw, words", [("channels", ["'C2'", "24 channels", "16 channels"]),
                                         ("strides", ["'C3'", "stride 16", "forward produced"])])
def test_the_registry_refuses_a_disagreeing_backbone_before_building_the_head(flaw, words):
    plugin = type("Flawed", (), {"vertebra_register_backbones": staticmethod(
        hookimpl(lambda register: register("flawed", _factory(flaw))))})
    registry.register_plugin(plugin, "flawed_plugin")
    with pytest.raises(IncompatibleError) as caught:
        registry.build("classifier", backbone="flawed", num_classes=2)
    assert all(word in str(caught.value) for word in ["does not produce what its feature_info declares", *words])
