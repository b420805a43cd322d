"""Perception: face detection, voice activity and direction of arrival."""
