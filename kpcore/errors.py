"""Exceptions raised by kpcore.

Every message names the bad value, what was expected, and what to do next.
User-input problems subclass :class:`ValueError` so callers can catch them
with ordinary Python idioms.
"""

from __future__ import annotations


class KpcoreError(Exception):
    """Base class of every error kpcore raises on purpose."""


class DatasetNotFoundError(KpcoreError, FileNotFoundError):
    """A dataset folder or file is missing; the message says where we looked and how to get it."""


class AnnotationError(KpcoreError, ValueError):
    """A label file (.asf, .pts, XML) is malformed; the message names the file and the problem."""


class ConfigError(KpcoreError, ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


class BadImageError(KpcoreError, ValueError):
    """An input image cannot be used (not an image, truncated, too large, ...)."""


class NoFaceFoundError(KpcoreError, ValueError):
    """No face was detected in an image."""


class DownloadError(KpcoreError, RuntimeError):
    """Downloading a dataset failed (no network, bad checksum, ...)."""


class CheckpointError(KpcoreError, ValueError):
    """A checkpoint folder is missing files or is inconsistent."""


class HubError(KpcoreError, RuntimeError):
    """Pushing to or pulling from the Hugging Face Hub failed."""


class BadVideoError(KpcoreError, ValueError):
    """An input video cannot be used (not a video, no frame can be decoded, ...)."""
