"""Benchmark settings: full or quick sizes, the execution variants (CPU float32; CUDA AMP/compile), the roofline.

Modes:

* full (default): batch 8 at 224 px for backbones, 7 interleaved rounds; heads at batch 4 (detection 2).
* ``--quick``: batch 2 at 64 px, 3 rounds: minutes, for ``vertebra bench --quick``; compared only with
  quick baselines.
* ``--benchmark-disable`` (what CI runs): quick sizes, every step executed once, nothing timed; the
  suite cannot rot, and no timing is gated.

``--bench-threads N`` pins torch's CPU threads (default: torch's choice); ``--no-compile`` skips the
``torch.compile(torchvision)`` references (minutes of compilation on a small CPU).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _harness import matmul_peak_gflops  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vertebra benchmarks")
    group.addoption("--quick", action="store_true", help="small sizes and few rounds (minutes)")
    group.addoption("--bench-threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    group.addoption("--no-compile", action="store_true",
                    help="skip the torch.compile(torchvision) references of the optimized cases")


@dataclass(frozen=True)
class Settings:
    """Sizes and round counts of one run (see the module docstring for the modes)."""

    mode: str            # "full", "quick" or "smoke" (benchmarks disabled)
    batch: int           # backbone / classifier cases
    size: int
    head_batch: int      # dense heads
    detection_batch: int
    head_size: int
    rounds: int
    head_rounds: int
    warmup: int
    compile_references: bool

    @property
    def timed(self) -> bool:
        return self.mode != "smoke"


@dataclass(frozen=True)
class Variant:
    """How a case executes: device, precision, memory format, compilation (same for ours and references)."""

    name: str
    device: str
    channels_last: bool = True
    amp_dtype: torch.dtype | None = None
    compile: bool = False

    def available(self) -> bool:
        return self.device == "cpu" or torch.cuda.is_available()

    @property
    def peak_key(self) -> str:
        """Which measured matmul peak is this variant's roofline (bf16 autocast runs on bf16 units)."""
        return self.device + ("-bf16" if self.amp_dtype == torch.bfloat16 else "")


CPU = Variant("cpu-fp32-cl", "cpu")
VARIANTS = (
    CPU,
    Variant("cuda-fp32", "cuda", channels_last=False),
    Variant("cuda-bf16-cl", "cuda", amp_dtype=torch.bfloat16),
    Variant("cuda-bf16-cl-compile", "cuda", amp_dtype=torch.bfloat16, compile=True),
)


def variant_params(variants=VARIANTS):
    """pytest params for variants; CUDA ones are skipped cleanly (with the reason) without a GPU."""
    return [pytest.param(v, id=v.name, marks=pytest.mark.skipif(not v.available(), reason="needs a CUDA device"))
            for v in variants]


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest) -> Settings:
    config = request.config
    threads = config.getoption("--bench-threads")
    if threads:
        torch.set_num_threads(threads)
    disabled = bool(config.getoption("benchmark_disable", False))
    if disabled:
        return Settings("smoke", 2, 64, 2, 2, 64, 1, 1, 0, False)
    if config.getoption("--quick"):
        return Settings("quick", 2, 64, 2, 2, 64, 3, 3, 1, False)
    return Settings("full", 8, 224, 4, 2, 224, 7, 5, 1, not config.getoption("--no-compile"))


# Every matmul-peak measurement of the run, per roofline key; the best one is the roofline.
_PEAKS: dict[str, float] = {}


@pytest.fixture
def peak_gflops(settings: Settings) -> dict[str, float]:
    """Dense matmul GFLOP/s per device (and dtype on CUDA): measured again before each case, best so far.

    On a shared machine one measurement can land in a burst of load; measuring before every case and
    keeping the best keeps the roofline a roofline.  The JSON written at the end recomputes every
    case's ``efficiency`` against the run's best (``pytest_benchmark_update_json``).
    """
    size = 2048 if settings.timed else 256
    measured = {"cpu": matmul_peak_gflops(torch.device("cpu"), size=size, repeats=3)}
    if torch.cuda.is_available():
        cuda, big = torch.device("cuda"), 8192 if settings.timed else 256
        measured["cuda"] = matmul_peak_gflops(cuda, size=big, repeats=3)
        measured["cuda-bf16"] = matmul_peak_gflops(cuda, size=big, repeats=3, dtype=torch.bfloat16)
    for key, value in measured.items():
        _PEAKS[key] = max(_PEAKS.get(key, 0.0), value)
    return dict(_PEAKS)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    """Record how this run was made, so a baseline says what it measured; efficiency vs the run's best peak."""
    for bench in output_json.get("benchmarks", []):
        info = bench.get("extra_info", {})
        peak = _PEAKS.get(info.get("peak_key"))
        if peak and info.get("gflops"):
            info["peak_gflops"] = peak
            info["efficiency"] = info["gflops"] / peak
    disabled = bool(config.getoption("benchmark_disable", False))
    output_json["vertebra"] = {
        "mode": "smoke" if disabled else ("quick" if config.getoption("--quick") else "full"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "command": " ".join(sys.argv),
        "matmul_peak_gflops": dict(_PEAKS),
    }
