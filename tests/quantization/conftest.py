import pytest

from quantize_helpers import batch_of, float_artifact, shapes_folder

pytest.importorskip("nncf")
pytest.importorskip("openvino")


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    return shapes_folder(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def calibration(shapes):
    return shapes / "train"


@pytest.fixture(scope="session")
def calibration_batch(shapes):
    return batch_of(shapes / "train")


@pytest.fixture(scope="session")
def quantized(tmp_path_factory, shapes):
    """``quantized(head, backbone)`` -> (float model, Quantized, int8 artifact path), made once per session."""
    import vertebra

    root, cache = tmp_path_factory.mktemp("int8"), {}
    train = batch_of(shapes / "train")

    def make(head, backbone):
        if (head, backbone) not in cache:
            source = float_artifact(head, backbone, train, root / f"{head}-{backbone}.safetensors")
            result = vertebra.quantize(source, shapes / "train", samples=16)
            cache[head, backbone] = (vertebra.load_model(source), result,
                                     result.save(root / f"{head}-{backbone}-int8.safetensors"))
        return cache[head, backbone]
    return make


