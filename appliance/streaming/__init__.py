"""Streaming: the framed picture as a WebRTC track, the panel's web server."""
