"""The simulated room: a meeting room rendered from a scenario file, as live sources or as files.

- :mod:`drivers.simroom.scenario` reads the scenario (``load_scenario``);
- :mod:`drivers.simroom.room` gives real-time sources (``SimulatedRoom(s).camera()``, ``.mic_array()``);
- :mod:`drivers.simroom.devices` registers them as the ``simroom`` camera and mic array;
- :mod:`drivers.simroom.export` writes a recording with ground truth (``render_to_dir``);
- :mod:`drivers.simroom.video` and :mod:`drivers.simroom.audio` do the rendering;
- :mod:`drivers.simroom.assets` provisions and synthesises speech, :mod:`drivers.simroom.faces` makes heads.

Only the scenario model is imported here, so that reading a scenario stays cheap.
"""

from drivers.simroom.scenario import (
    Scenario,
    ScenarioError,
    builtin_scenario,
    camera_geometry,
    load_scenario,
    mic_array_geometry,
)

__all__ = ["Scenario", "ScenarioError", "builtin_scenario", "load_scenario", "camera_geometry", "mic_array_geometry"]
