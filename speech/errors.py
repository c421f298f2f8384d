"""Errors of the speech package, worded for the consultant or operator who reads them."""

from __future__ import annotations


class SpeechError(Exception):
    """A recording could not be transcribed."""

    # True when trying the same file again cannot help (the job stops instead of retrying).
    permanent: bool = False


class NoModel(SpeechError):
    """No speech model is installed for the recording's language."""

    permanent = True


class AudioError(SpeechError):
    """The audio file cannot be used: empty, corrupt, too long or in an unreadable format."""

    permanent = True


class NoSpeech(SpeechError):
    """The audio decoded fine but no words were recognised (a silent recording)."""

    permanent = True
