"""Load COCO files through every entry point that rasterises them, under an address-space limit.

Run as ``python limited_load.py HEADROOM_MB IMAGE_DIR ANN_FILE...`` (see ``run_limited`` in
conftest.py).  The heavy imports come first; then ``RLIMIT_AS`` is set to the process's current
size plus ``HEADROOM_MB``, so a polygon that makes pycocotools allocate gigabytes fails *this*
process (``MemoryError`` / ``bad_alloc``) instead of taking the machine down.  For each file it
prints one line: ``ok`` or ``DataError: <message>``; anything else escapes and exits non-zero.
"""

from __future__ import annotations

import contextlib
import io
import resource
import sys
import warnings


def _vm_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(row for row in status if row.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def _load_everything(image_dir: str, ann_file: str) -> None:
    from vertebra.cli import main
    from vertebra.data import CocoDetection, CocoSemantic

    for dataset in (CocoDetection(image_dir, ann_file, with_masks=True), CocoSemantic(image_dir, ann_file)):
        for index in range(len(dataset)):
            dataset[index]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["data", "check", ann_file, "--images", image_dir])
    if code:
        raise _Refused(err.getvalue().strip().splitlines()[-1])


class _Refused(Exception):
    pass


def main() -> int:
    headroom, image_dir, *ann_files = sys.argv[1:]
    import vertebra.cli  # noqa: F401  (torch & co. before the limit: their mappings are large)
    import vertebra.data.coco  # noqa: F401
    import vertebra.data.semantic  # noqa: F401
    from vertebra.errors import DataError

    limit = _vm_bytes() + int(headroom) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    for ann_file in ann_files:
        try:
            _load_everything(image_dir, ann_file)
        except DataError as error:
            print(f"DataError: {error}", flush=True)
        except _Refused as refused:
            print(f"refused by data check only: {refused}", flush=True)
        else:
            print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
