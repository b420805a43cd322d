"""Sound-card mic arrays through PortAudio: the ``sounddevice`` (default) and ``pyaudio`` drivers.

- :mod:`drivers.audio.presets`: the geometry and channel layout of the arrays people buy, and the array's
  pose (position and rotation) relative to the camera.
- :mod:`drivers.audio.resample`: a streaming polyphase resampler (device rate -> the array's ``sample_rate``).
- :mod:`drivers.audio.capture`: the capture source (callback thread -> asyncio queue, channel map, stamping
  on the capture clock, overflow and drop counters, a vanished device -> ``SourceLost``).
- :mod:`drivers.audio.devices`: the config sections and the registered drivers; ``list_input_devices``.
"""
