"""Face detectors as plugins behind one interface: ``make_detector(cfg.detector) -> Detector``
(:class:`appliance.ports.Detector`: ``detect(rgb, t) -> Faces`` and ``close()``).

The ``[detector]`` section's ``type`` picks the plugin: ``"yunet"`` (the default, :mod:`.yunet`) or
``"blazeface"`` (:mod:`.faces`, MediaPipe BlazeFace on the whole frame and tiles). Each has its own keys
(:class:`appliance.config.YuNetConfig`, :class:`appliance.config.BlazeFaceConfig`).
"""

from __future__ import annotations

from pathlib import Path

from appliance.config import BlazeFaceConfig, YuNetConfig
from appliance.ports import Detector

__all__ = ["Detector", "make_detector"]


def make_detector(cfg: YuNetConfig | BlazeFaceConfig | None = None, model_path: Path | None = None) -> Detector:
    """The detector that ``cfg`` (a ``[detector]`` section; default YuNet) describes.

    ``model_path`` replaces the plugin's own model file (tests, a damaged install).
    """
    cfg = cfg or YuNetConfig()
    if isinstance(cfg, YuNetConfig):
        from appliance.perception.yunet import YuNetDetector

        return YuNetDetector(cfg, model_path)
    if isinstance(cfg, BlazeFaceConfig):
        from appliance.perception.faces import FaceDetector

        return FaceDetector(model_path, cfg)
    raise TypeError(f"no face detector for {type(cfg).__name__}")
