"""Fuzz: any registry config, however wrong, fails with a typed VertebraError, never a raw exception.

Configs are drawn from what the registry offers (every head of ``list_heads()``, every backbone of
``list_backbones()``), with option keys from each factory's signature plus junk, and values from a
pool of plausible and hostile ones.  Everything is built on the ``meta`` device (shapes only), so a
huge width costs nothing.  With the built-ins alone a ``PluginError`` is a failure too: it is the
registry's last-resort wrapper of a raw exception from a builder, i.e. a validation gap in vertebra.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vertebra import registry
from vertebra.errors import ConfigError, PluginError, VertebraError
from vertebra.registry._catalog import catalog
from vertebra.registry._kwargs import signature_of

JUNK_KEYS = ("bogus", "num_class", "backbone_name", "name", "head", "out_indices", "output_stride")
WORDS = ("default", "fast", "avg", "max", "add", "cat", "scse", "nearest", "bilinear", "eval", "frozen", "", "ü")


def _near(default):
    """Values close to a valid one for an option whose default is ``default``: most configs get deep."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(1, 2 * max(default, 16)) | st.sampled_from([0, 1, 7, 31, 32, 33, 1000, 1024])
    if isinstance(default, float):
        return st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0, 1.5, -0.1])
    if isinstance(default, (tuple, list)):
        return st.lists(st.integers(1, 64), max_size=6).map(type(default)) | \
            st.lists(st.floats(0.1, 4), min_size=1, max_size=4)
    if isinstance(default, str):
        return st.sampled_from((default, *WORDS))
    return st.none() | st.sampled_from(WORDS) | st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 64]),
                                                          max_size=6) | st.integers(-1, 600)


HOSTILE = st.one_of(st.none(), st.booleans(), st.integers(-3, 1100), st.sampled_from(WORDS),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                    st.lists(st.integers(-2, 600), max_size=6).map(tuple),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def _options(draw, params):
    """Mostly the factory's own keys with near-valid values; now and then a junk key or a hostile value."""
    keys = draw(st.lists(st.sampled_from(sorted(params)), max_size=4, unique=True)) if params else []
    if draw(st.integers(0, 9)) == 0:
        keys.append(draw(st.sampled_from(JUNK_KEYS)))
    return {key: draw(HOSTILE if draw(st.integers(0, 4)) == 0 else _near(params.get(key))) for key in keys}


@st.composite
def configs(draw):
    cat = catalog()
    heads, backbones = registry.list_heads(), registry.list_backbones()
    head = draw(st.sampled_from(["no_such_head", 3, None])) if draw(st.integers(0, 19)) == 0 else \
        draw(st.sampled_from(heads))
    backbone_name = draw(st.sampled_from(["nope", 7])) if draw(st.integers(0, 19)) == 0 else \
        draw(st.sampled_from(backbones))
    head_params = signature_of(cat.lookup("head", head).factory, skip_first=True).params if head in heads else {}
    backbone_params = signature_of(cat.lookup("backbone", backbone_name).factory).params \
        if backbone_name in backbones else {}
    if draw(st.booleans()):
        backbone = {"name": backbone_name, **draw(_options(backbone_params))}
    else:
        backbone = backbone_name
    return {"head": head, "backbone": backbone, **draw(_options(head_params))}


@pytest.fixture(autouse=True)
def builtins_only(monkeypatch):
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGIN_AUTOLOAD", "1")


@settings(max_examples=180, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@example({"head": "fpn", "backbone": "mobilenet_v3_small", "segmentation_channels": 1000})
@given(config=configs())
def test_every_failing_registry_config_is_a_vertebra_error(config):
    try:
        with torch.device("meta"):
            registry.build_from_config(config)
    except PluginError as exc:
        raise AssertionError(f"{config}: a builder raised a raw {type(exc.__cause__).__name__} that the "
                             f"registry had to wrap; validate it up front: {exc}") from exc
    except VertebraError:
        pass


@pytest.mark.parametrize("channels, ok", [(1000, False), (48, False), (96, True), (1024, True)])
def test_fpn_segmentation_channels_must_be_a_multiple_of_32(channels, ok):
    """smp's FPN raised a raw ValueError from GroupNorm(32, channels) (issue 17, finding 15)."""
    config = {"head": "fpn", "backbone": "mobilenet_v3_small", "segmentation_channels": channels}
    with torch.device("meta"):
        if ok:
            assert registry.build_from_config(config).config["segmentation_channels"] == channels
            return
        with pytest.raises(ConfigError, match="multiple of 32.*GroupNorm") as info:
            registry.build_from_config(config)
    assert info.value.path == "segmentation_channels" and str(channels) in str(info.value)
