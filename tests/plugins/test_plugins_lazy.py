"""``import vertebra`` is cheap: no registry, no plugin machinery, no torch; plugins load on first registry use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from plugin_fakes import plugin_source
from vertebra.plugins.testing import write_distribution

PROBE = """
import json, sys
def loaded():
    return sorted(m for m in sys.modules if m.split('.')[0] in ('vertebra', 'torch', 'torchvision', 'pluggy', {fake!r}))
import vertebra
steps = {{'import vertebra': loaded()}}
from vertebra import registry
steps['from vertebra import registry'] = loaded()
registry.list_backbones()
steps['list_backbones'] = loaded()
print(json.dumps(steps))
"""


def _run(code, extra_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(extra_path), os.environ.get("PYTHONPATH", "")]),
               VERTEBRA_DISABLE_PLUGINS="vertebra")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_import_vertebra_loads_no_plugin_and_no_torch(tmp_path):
    write_distribution(tmp_path, "lazy-dist", "1.0", {"lazy": "vfake_lazy_mod"},
                       {"vfake_lazy_mod": plugin_source(backbones=["lazy_net"])})
    steps = _run(PROBE.format(fake="vfake_lazy_mod"), tmp_path)
    assert steps["import vertebra"] == ["vertebra", "vertebra.lazy"]  # the lazy-attribute helper, torch-free
    after_registry = steps["from vertebra import registry"]
    assert not [m for m in after_registry if m.startswith(("torch", "vfake"))]
    assert "vertebra.plugins.builtin" not in after_registry
    assert "vfake_lazy_mod" in steps["list_backbones"]  # the first registry call discovers plugins
