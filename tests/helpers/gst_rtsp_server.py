"""A real RTSP server for the tests: GStreamer's gst-rtsp-server (Debian gir1.2-gst-rtsp-server-1.0),
relaying the H.264 RTP that Debian's ffmpeg sends it on a UDP port, as rtsp://127.0.0.1:PORT/live.

Run with Debian's python3 (python3-gi): ``/usr/bin/python3 gst_rtsp_server.py RTSP_PORT RTP_PORT``. Prints
``ready`` once listening. Listens on 127.0.0.1 only.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
rtsp_port, rtp_port = sys.argv[1], int(sys.argv[2])
server = GstRtspServer.RTSPServer.new()
server.set_address("127.0.0.1")
server.set_service(rtsp_port)
factory = GstRtspServer.RTSPMediaFactory.new()
factory.set_launch(
    f"( udpsrc address=127.0.0.1 port={rtp_port} "
    'caps="application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96" '
    "! rtph264depay ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{rtsp_port}")
print("ready", flush=True)
GLib.MainLoop().run()
