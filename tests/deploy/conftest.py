import pytest

from deploy_helpers import random_artifact


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """One random-weight artifact per task, written once per session."""
    root = tmp_path_factory.mktemp("artifacts")
    return {task: random_artifact(task, root / f"{task}.safetensors")
            for task in ("detection", "instance", "semantic", "classification")}
