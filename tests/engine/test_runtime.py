"""Devices, AMP on CPU, thread choice, stop signals, channels_last / EMA / clipping in a real run."""

from __future__ import annotations

import os
import signal
import warnings

import pytest
import torch

from vertebra.engine import train
from vertebra.engine.runtime import StopSignal, amp_dtype, idle_cores, make_scaler, resolve_device
from vertebra.errors import ConfigError

from engine_helpers import tiny


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="use auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device("cuda")


def test_amp_is_cuda_only_and_scaler_only_for_fp16():
    cpu = torch.device("cpu")
    with pytest.warns(UserWarning, match="amp='bf16' is for CUDA"):
        assert amp_dtype("bf16", cpu) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert amp_dtype("off", cpu) is None
    assert not make_scaler(None, cpu).is_enabled()
    assert not make_scaler(torch.bfloat16, cpu).is_enabled()


def test_idle_cores_is_between_one_and_all(monkeypatch):
    cores = os.cpu_count() or 1
    assert 1 <= idle_cores() <= cores
    monkeypatch.setattr(os, "getloadavg", lambda: (cores * 3.0, 0.0, 0.0))
    assert idle_cores() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert idle_cores() == cores


def test_ctrl_c_sets_the_flag_once_and_interrupts_the_second_time(default_sigint):
    stop = StopSignal()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_during_training_writes_a_checkpoint(tmp_path):
    def interrupt(epoch, step):
        if (epoch, step) == (0, 1):
            os.kill(os.getpid(), signal.SIGINT)

    config = tiny("semantic", epochs=2, batch_size=2)
    config["data"]["num_train"] = 6
    result = train(config, out_dir=tmp_path, progress=False, on_step=interrupt)
    assert result.stopped_by == "SIGINT" and result.metrics == {}
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 2)


def test_channels_last_ema_clipping_and_bn_momentum_in_one_run(tmp_path):
    config = tiny("semantic", channels_last=True, ema=0.5, clip_grad_norm=0.1, bn_momentum=0.3, threads=1)
    result = train(config, out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert state["ema"] is not None and int(state["ema"]["n_averaged"]) == 2
    assert {"mIoU", "pixel_acc"} <= set(result.metrics)
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    norms = [m for m in result.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.3 for m in norms)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_plumbing_runs_under_cpu_autocast(tmp_path, monkeypatch, dtype):
    """No GPU here: force the AMP path onto CPU autocast to exercise autocast + GradScaler + checkpoint."""
    import vertebra.engine.loop as loop

    monkeypatch.setattr(loop, "amp_dtype", lambda amp, device: dtype)
    result = train(tiny("semantic"), out_dir=tmp_path, progress=False)
    assert all(v == v for v in result.metrics.values())            # finite, not NaN
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert (state["scaler"] is not None) == (dtype == torch.float16)   # GradScaler only for float16
