"""Pan/tilt/zoom cameras: one interface the director drives (:mod:`drivers.ptz.base`), VISCA over IP, TCP and
serial (:mod:`drivers.ptz.visca_client`, codec in :mod:`drivers.ptz.visca`), UVC controls
(:mod:`drivers.ptz.uvc`), and a VISCA camera simulator (:mod:`drivers.ptz.simulator`)."""
